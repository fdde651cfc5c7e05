"""Simulated sysfs trees for edge boards (Jetson power monitors) and RAPL zones.

The trees reproduce the documented layouts, so the production Jetson and RAPL
sources read them unchanged. ``update(t)`` writes every file for scenario time t:
instantaneous rail power from the board's pattern, and RAPL ``energy_uj`` as the
exact integral (wrapping at ``max_energy_range_uj``).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .patterns import Pattern
from .ticker import Ticker

JETSONS = ("orin", "xavier", "nano", "thor")
# Other battery- and sensor-powered devices: a Raspberry Pi with an INA219 on its 5-V input (hwmon),
# and a laptop on its battery (power_supply). Read by the hwmon and battery sources.
OTHER_DEVICES = ("rpi", "laptop")
BOARDS = JETSONS + OTHER_DEVICES
# The registered source (plugins.py) that reads each simulated board, and the settings its owner
# would configure (docs/edge.md): a Pi's INA219 sits on its 5-V input, so it measures the whole board.
READ_BY: dict[str, tuple[str, dict]] = {**{board: ("jetson", {}) for board in JETSONS},
                                        "rpi": ("hwmon", {"enabled": True, "whole_device": ["ina219"]}),
                                        "laptop": ("battery", {"enabled": True})}
MODELS = {"orin": "NVIDIA Jetson AGX Orin Developer Kit", "xavier": "NVIDIA Jetson AGX Xavier Developer Kit",
          "nano": "NVIDIA Jetson Nano Developer Kit", "thor": "NVIDIA Jetson AGX Thor Developer Kit",
          "rpi": "Raspberry Pi 5 Model B Rev 1.0"}
# Share of the board power drawn by each rail (the first rail of Orin/Nano is the total).
RAILS = {
    "orin": [("VDD_IN", 1.0), ("VDD_CPU_GPU_CV", 0.55), ("VDD_SOC", 0.2)],
    "xavier": [("GPU", 0.4), ("CPU", 0.3), ("SOC", 0.15), ("CV", 0.05), ("VDDRQ", 0.04), ("SYS5V", 0.06)],
    "nano": [("POM_5V_IN", 1.0), ("POM_5V_GPU", 0.35), ("POM_5V_CPU", 0.3)],
    "thor": [("VDD_IN", 1.0)],
}
IDLE_MAX_W = {"orin": (9.0, 60.0), "xavier": (8.0, 30.0), "nano": (2.0, 10.0), "thor": (25.0, 130.0),
              "rpi": (2.5, 12.0), "laptop": (4.0, 65.0)}
RAPL_SHARES = {"package": 1.0, "core": 0.6, "uncore": 0.15}
RAPL_MAX_UJ = 262143328850


def _w(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


@dataclass
class EdgeBoard:
    kind: str
    pattern: Pattern

    def rails(self) -> list[tuple[str, float]]:
        return RAILS[self.kind]


class SysfsSimulator(Ticker):
    """Lays out the trees under ``root`` and rewrites the values on ``update``."""
    thread_name = "sysfs-sim"

    def __init__(self, root: Path, board: EdgeBoard | None = None, rapl: Pattern | None = None,
                 rapl_packages: int = 1, dram_share: float = 0.1, psys: bool = False,
                 rapl_offset_uj: int = 0) -> None:
        self.root, self.board, self.rapl = Path(root), board, rapl
        self.rapl_packages, self.dram_share, self.psys = rapl_packages, dram_share, psys
        self.rapl_offset_uj = rapl_offset_uj
        self._files: list[tuple[Path, Callable[[float], int]]] = []
        self._stop = threading.Event()
        if board:
            self._layout_board(board)
        if rapl:
            self._layout_rapl(rapl)
        for path, _ in self._files:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.update(0.0)

    # -- Raspberry Pi (INA219 on hwmon) and laptop (battery) ----------------------
    def _layout_other(self, b: EdgeBoard) -> None:
        p = b.pattern.power
        if b.kind == "rpi":
            _w(self.root / "proc/device-tree/model", MODELS["rpi"])
            hw = self.root / "sys/class/hwmon/hwmon2"  # ina2xx: in1 bus mV, curr1 mA, power1 µW
            _w(hw / "name", "ina219")
            self._files.append((hw / "in1_input", lambda t: 5100))
            self._files.append((hw / "curr1_input", lambda t: round(p(t) / 5.1 * 1000)))
            self._files.append((hw / "power1_input", lambda t: round(p(t) * 1e6)))
            _w(self.root / "sys/class/hwmon/hwmon0/name", "cpu_thermal")  # a sensor with no power channel
            _w(self.root / "sys/class/hwmon/hwmon0/temp1_input", 48000)
        else:
            bat = self.root / "sys/class/power_supply/BAT0"
            _w(bat / "type", "Battery")
            _w(bat / "status", "Discharging")
            self._files.append((bat / "power_now", lambda t: round(p(t) * 1e6)))
            _w(bat / "voltage_now", 11_550_000)
            _w(self.root / "sys/class/power_supply/AC/type", "Mains")
            _w(self.root / "sys/class/power_supply/AC/online", 0)

    # -- Jetson ----------------------------------------------------------------
    def _layout_board(self, b: EdgeBoard) -> None:
        if b.kind in OTHER_DEVICES:
            return self._layout_other(b)
        _w(self.root / "proc/device-tree/model", MODELS[b.kind])
        i2c = self.root / "sys/bus/i2c/devices"
        p = b.pattern.power
        if b.kind in ("orin", "xavier"):
            groups = [b.rails()] if b.kind == "orin" else [b.rails()[:3], b.rails()[3:]]
            for g, rails in enumerate(groups):
                dev = i2c / f"1-004{g}"
                _w(dev / "name", "ina3221")
                hw = dev / "hwmon" / f"hwmon{3 + g}"
                for n, (label, share) in enumerate(rails, start=1):
                    volts = 19.0 if label == "VDD_IN" else 5.0
                    _w(hw / f"in{n}_label", label)
                    self._files.append((hw / f"in{n}_input", lambda t, v=volts: int(v * 1000)))
                    self._files.append((hw / f"curr{n}_input",
                                        lambda t, s=share, v=volts: round(p(t) * s / v * 1000)))
                _w(hw / "in4_label", "NC")  # an unconnected channel
                _w(hw / "in4_input", 0)
                _w(hw / "curr4_input", 0)
                _w(hw / "in7_label", "sum of shunt voltages")
                _w(hw / "in7_input", 40)
                _w(hw / "curr7_input", 100)
            load = "sys/devices/platform/17000000.ga10b/load" if b.kind == "orin" else "sys/devices/gpu.0/load"
        elif b.kind == "nano":
            dev = i2c / "6-0040"
            _w(dev / "name", "ina3221x")
            iio = dev / "iio:device0"
            for n, (label, share) in enumerate(b.rails()):
                _w(iio / f"rail_name_{n}", label)
                self._files.append((iio / f"in_voltage{n}_input", lambda t: 5000))
                self._files.append((iio / f"in_current{n}_input", lambda t, s=share: round(p(t) * s / 5.0 * 1000)))
                self._files.append((iio / f"in_power{n}_input", lambda t, s=share: round(p(t) * s * 1000)))
            load = "sys/devices/gpu.0/load"
        else:  # thor
            dev = i2c / "2-0044"
            _w(dev / "name", "ina238")
            hw = dev / "hwmon" / "hwmon5"
            _w(hw / "power1_label", "VDD_IN")
            self._files.append((hw / "power1_input", lambda t: round(p(t) * 1e6)))
            load = "sys/devices/platform/bus@0/17000000.gpu/load"
        idle, top = IDLE_MAX_W[b.kind]
        self._files.append((self.root / load, lambda t: min(1000, max(0, round(1000 * (p(t) - idle) / (top - idle))))))

    # -- RAPL ------------------------------------------------------------------
    def _layout_rapl(self, pattern: Pattern) -> None:
        base = self.root / "sys/class/powercap"

        def energy(share: float) -> Callable[[float], int]:
            return lambda t: (round(pattern.energy(t) * share * 1e6) + self.rapl_offset_uj) % RAPL_MAX_UJ

        for k in range(self.rapl_packages):
            share = 1.0 / self.rapl_packages
            zones = [(f"intel-rapl:{k}", f"package-{k}", share)]
            zones += [(f"intel-rapl:{k}:{j}", name, share * RAPL_SHARES[name])
                      for j, name in enumerate(("core", "uncore"))]
            zones.append((f"intel-rapl:{k}:2", "dram", share * self.dram_share))
            for zone, name, s in zones:
                _w(base / zone / "name", name)
                _w(base / zone / "max_energy_range_uj", RAPL_MAX_UJ)
                self._files.append((base / zone / "energy_uj", energy(s)))
        # The same package through MMIO: the source must not count it twice.
        _w(base / "intel-rapl-mmio:0" / "name", "package-0")
        _w(base / "intel-rapl-mmio:0" / "max_energy_range_uj", RAPL_MAX_UJ)
        self._files.append((base / "intel-rapl-mmio:0" / "energy_uj", energy(1.0 / self.rapl_packages)))
        if self.psys:
            _w(base / f"intel-rapl:{self.rapl_packages}" / "name", "psys")
            _w(base / f"intel-rapl:{self.rapl_packages}" / "max_energy_range_uj", RAPL_MAX_UJ)
            self._files.append((base / f"intel-rapl:{self.rapl_packages}" / "energy_uj",
                                energy(1.0 + self.dram_share + 0.2)))

    # -- values ----------------------------------------------------------------
    def update(self, t: float) -> None:
        """Rewrite every value atomically (like sysfs, a reader never sees a half-written file)."""
        for path, value in self._files:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(f"{value(t)}\n")
            os.replace(tmp, path)

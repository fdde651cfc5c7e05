"""NVIDIA Jetson power rails (INA3221 / INA238 monitors) and GPU load, from sysfs.

Layouts (paths relative to the injectable root):
- JetPack 5 and later (Orin, Xavier): ``sys/bus/i2c/devices/*/name`` is ``ina3221``;
  ``…/hwmon/hwmon*/inN_label``, ``inN_input`` (mV), ``currN_input`` (mA).
- JetPack 4 (Nano, TX1/TX2, Xavier on JP4): name ``ina3221x``; ``…/iio:device*/rail_name_N``,
  ``in_voltageN_input`` (mV), ``in_currentN_input`` (mA), ``in_powerN_input`` (mW).
- Thor: name ``ina238``; ``…/hwmon/hwmon*/power1_input`` (µW).
Channels labelled with ``NC`` (not connected) and the sum channel are skipped.
Rails have no energy counter: the meter integrates them.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..kinds import Accounting, DeviceKind, register_kind
from ..plugins import register
from .base import (DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, SYSFS_SCHEMA,
                   SourceUnavailable, sysfs_factory)

log = logging.getLogger(__name__)
# The board's total input power counts in the node's total; its rails are inside that total, never counted.
BOARD = register_kind(DeviceKind(name="board", label="board", doc="edge board (total input power)",
                                 accounting=Accounting.EVERY, order=20))
RAIL = register_kind(DeviceKind(name="rail", label="rail", doc="power rail", accounting=Accounting.NEVER, order=30))

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
# GPU load (0-1000), first that exists: Nano/TX2/Xavier, platform variant, Orin (JP5), Orin (JP6), Xavier (gv11b).
GPU_LOAD_PATHS = ("sys/devices/gpu.0/load", "sys/devices/platform/gpu.0/load",
                  "sys/devices/platform/17000000.ga10b/load", "sys/devices/platform/bus@0/17000000.gpu/load",
                  "sys/devices/platform/17000000.gv11b/load")


@dataclass(frozen=True)
class Rail:
    sensor: str  # i2c device, e.g. "1-0040"
    name: str
    files: tuple[Path, ...]  # (power µW) or (mV, mA) or (power mW)
    unit: str  # "uW", "mV*mA", "mW"

    def power_mw(self) -> int:
        values = [int(f.read_text().strip()) for f in self.files]
        if self.unit == "uW":
            return values[0] // 1000
        if self.unit == "mW":
            return values[0]
        return values[0] * values[1] // 1000


def _skip(label: str) -> bool:
    return bool(re.search(r"\bNC\b", label)) or "sum" in label.lower()


def find_rails(root: Path) -> list[Rail]:
    rails: list[Rail] = []
    for name_file in sorted(root.glob("sys/bus/i2c/devices/*/name")):
        chip, dev = name_file.read_text().strip(), name_file.parent
        if chip == "ina3221":
            for hw in sorted(dev.glob("hwmon/hwmon*")):
                for label_file in sorted(hw.glob("in*_label")):
                    n = label_file.name[2:-6]
                    label = label_file.read_text().strip()
                    volt, curr = hw / f"in{n}_input", hw / f"curr{n}_input"
                    if not _skip(label) and volt.exists() and curr.exists():
                        rails.append(Rail(dev.name, label, (volt, curr), "mV*mA"))
        elif chip == "ina3221x":
            for iio in sorted(dev.glob("iio:device*")):
                for label_file in sorted(iio.glob("rail_name_*")):
                    n = label_file.name.rsplit("_", 1)[1]
                    label = label_file.read_text().strip()
                    power = iio / f"in_power{n}_input"
                    if not _skip(label) and power.exists():
                        rails.append(Rail(dev.name, label, (power,), "mW"))
        elif chip == "ina238":
            for hw in sorted(dev.glob("hwmon/hwmon*")):
                power = hw / "power1_input"
                label_file = hw / "power1_label"
                label = label_file.read_text().strip() if label_file.exists() else f"ina238-{dev.name}"
                if power.exists() and not _skip(label):
                    rails.append(Rail(dev.name, label, (power,), "uW"))
    return rails


class JetsonSource(DeviceSource):
    """One ``board`` device (total input power, GPU load) plus one ``rail`` device per rail."""

    name = "jetson"

    def __init__(self, root: str | Path = "/", clock: Callable[[], float] = time.monotonic) -> None:
        self.root, self.clock = Path(root), clock
        self._recent: dict[Rail, tuple[float, int]] = {}
        self._rails: dict[str, Rail] = {}
        self._total: list[Rail] = []
        self._load: Path | None = None

    def open(self) -> list[DeviceIdentity]:
        rails = find_rails(self.root)
        if not rails:
            raise SourceUnavailable(f"no Jetson power monitor (ina3221/ina238) under {self.root}")
        total = [r for r in rails if r.name in TOTAL_RAILS]
        self._total = total[:1] or rails
        self._load = next((self.root / p for p in GPU_LOAD_PATHS if (self.root / p).exists()), None)
        # /proc/device-tree links to /sys/firmware/devicetree/base: a container that mounts only
        # the host's /sys still finds the model there.
        model_file = next((self.root / p for p in ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
                           if (self.root / p).exists()), None)
        model = model_file.read_text().strip("\x00\n ") if model_file else "jetson"
        devices = [DeviceIdentity(index=0, uuid="jetson:board", name=model, kind=BOARD.name,
                                  has_energy_counter=False, labels=(("model", model),))]
        for i, rail in enumerate(rails, start=1):
            key = f"jetson:{rail.sensor}:{rail.name}"
            self._rails[key] = rail
            # Every rail is inside the board total (or is part of the sum that makes it): not accounted.
            devices.append(DeviceIdentity(index=i, uuid=key, name=rail.name, kind=RAIL.name, has_energy_counter=False,
                                          labels=(("sensor", rail.sensor), ("rail", rail.name)), accounted=False))
        log.info("Jetson %s: %d rails, board total from %s, GPU load from %s", model, len(rails),
                 "+".join(r.name for r in self._total), self._load or "nowhere")
        return devices

    # The board total is also a rail (VDD_IN) or the sum of the rails, all read in the same tick:
    # one I2C read per rail and tick is enough.
    SAME_TICK_S = 0.005

    def _rail_mw(self, rail: Rail) -> int:
        now = self.clock()
        hit = self._recent.get(rail)
        if hit is not None and now - hit[0] < self.SAME_TICK_S:
            return hit[1]
        value = rail.power_mw()
        self._recent[rail] = (now, value)
        return value

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        try:
            if device.kind == BOARD.name:
                return sum(self._rail_mw(r) for r in self._total)
            return self._rail_mw(self._rails[device.uuid])
        except (OSError, ValueError) as err:
            raise DeviceLost(f"{device.uuid}: {err}") from err

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        reading = DeviceReading(power_mw=self.read_power_mw(device))
        if device.kind == BOARD.name and self._load is not None:
            try:
                reading.gpu_util_pct = round(int(self._load.read_text().strip()) / 10)
            except (OSError, ValueError) as err:
                reading.errors.append(f"gpu load: {err}")
        return reading


register("source", "jetson", sysfs_factory(JetsonSource), "Jetson power rails (INA3221/INA238) and GPU load",
         schema=SYSFS_SCHEMA)

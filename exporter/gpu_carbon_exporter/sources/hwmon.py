"""Generic Linux hwmon power sensors: INA219/INA226/INA260 (ina2xx) on Raspberry Pi and industrial
boards, ACPI power meters (``power1_average``) on servers, any driver with power or energy channels.

Per hwmon device (``sys/class/hwmon/hwmon*``, its driver in ``name``):

- ``energy*_input`` (µJ): a hardware counter (``method="counter"``);
- else ``power*_input`` or ``power*_average`` (µW), integrated at ``sampling.integration_hz``;
- else, where the config pairs them, voltage ``in*_input`` (mV) × current ``curr*_input`` (mA):
  drivers label these differently, so a pair is only ever taken from the config.

Units are converted once, here, to the meter's mW and mJ. Drivers covered by another source are
denied by default, so nothing is counted twice: ``ina3221`` and ``ina238`` (the Jetson source),
``amdgpu`` (the amdgpu source, ``sources/amdgpu.py``, reads its power beside the card's energy
counter), ``xe``/``i915``/``i915_gt*`` (Intel GPUs: the intel_gpu source reads them, and a tile's
energy is inside its card's), ``nouveau`` (a GPU), ``coretemp``/``k10temp`` (temperatures only
anyway). An ACPI power meter (driver ``power_meter``) measures the whole node, and so does a sensor
on a board's input (``whole_device`` drivers, e.g. the INA219 on a Raspberry Pi's 5-V input): those
are the ``node`` kind, like a BMC, so the parts measured on their own are taken out of them
(docs/edge.md).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..kinds import Accounting, DeviceKind, register_kind
from ..plugins import SourceContext, register
from ..schema import names
from .base import DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, SourceUnavailable
from .whole_node import NODE

log = logging.getLogger(__name__)
# A sensor of a part of the node; whole-node sensors are the node kind.
HWMON = register_kind(DeviceKind(name="hwmon", label="hwmon", doc="hwmon", accounting=Accounting.EVERY, order=40))
# ina3221/ina238: the Jetson source's; amd_energy: RAPL's registers again; amdgpu: the amdgpu source's
# (sources/amdgpu.py), which covers every card the driver shows; xe/i915/i915_gt*: the intel_gpu source's
# (sources/intel_gpu.py; a tile's energy is inside its card's); nouveau: a GPU.
DEFAULT_DENY = ("ina3221", "ina238", "amd_energy", "amdgpu", "nouveau", "xe", "i915", "i915_gt0", "i915_gt1",
                "coretemp", "k10temp")
# Whole-node meters: the ACPI power meter's driver calls itself "power_meter".
WHOLE_NODE = ("power_meter",)


@dataclass
class _Channel:
    path: Path
    driver: str
    channel: str  # e.g. power1, energy1, or in1*curr1
    label: str
    energy: Path | None = None  # energy*_input, µJ
    power: Path | None = None  # power*_input or power*_average, µW
    volts: Path | None = None  # in*_input, mV
    amps: Path | None = None  # curr*_input, mA

    def read_int(self, p: Path) -> int:
        try:
            return int(p.read_text().strip())
        except (OSError, ValueError) as err:
            raise DeviceLost(f"{p}: {err}") from err

    def power_mw(self) -> int:
        if self.power is not None:
            return self.read_int(self.power) // 1000
        return self.read_int(self.volts) * self.read_int(self.amps) // 1000  # mV × mA = µW


class HwmonSource(DeviceSource):
    name = "hwmon"
    noun = "hwmon sensor"

    def __init__(self, root: str | Path = "/", allow: tuple[str, ...] = (), deny: tuple[str, ...] = DEFAULT_DENY,
                 pairs: tuple[dict[str, str], ...] = (), whole_device: tuple[str, ...] = (),
                 clock=time.monotonic) -> None:
        self.root, self.allow, self.deny, self.pairs, self.clock = Path(root), allow, deny, pairs, clock
        self.whole = WHOLE_NODE + tuple(whole_device)
        self._channels: dict[str, _Channel] = {}

    def _wanted(self, driver: str) -> bool:
        return driver in self.allow if self.allow else driver not in self.deny

    def _scan(self, d: Path, driver: str) -> list[_Channel]:
        files = {p.name for p in d.iterdir()}
        out = []
        for f in sorted(files):
            m = re.fullmatch(r"(energy|power)(\d+)_(input|average)", f)
            if not m or (m[1] == "power" and f"energy{m[2]}_input" in files):
                continue
            if m[1] == "power" and m[3] == "input" and f"power{m[2]}_average" in files:
                continue  # the average where a driver offers both: each reading covers its interval
            label_file = d / f"{m[1]}{m[2]}_label"
            label = label_file.read_text().strip() if label_file.exists() else f"{m[1]}{m[2]}"
            ch = _Channel(d, driver, f"{m[1]}{m[2]}", label)
            setattr(ch, "energy" if m[1] == "energy" else "power", d / f)
            out.append(ch)
        for pair in self.pairs if not out else ():  # a pair only where the driver has no power channel
            if pair.get("driver") == driver and f"{pair['voltage']}_input" in files and \
                    f"{pair['current']}_input" in files:
                out.append(_Channel(d, driver, f"{pair['voltage']}*{pair['current']}",
                                    pair.get("label", pair["voltage"]),
                                    volts=d / f"{pair['voltage']}_input", amps=d / f"{pair['current']}_input"))
        return out

    def open(self) -> list[DeviceIdentity]:
        base = self.root / "sys/class/hwmon"
        devices = []
        for hw in sorted(base.glob("hwmon*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0)):
            d = hw
            if not (d / "name").exists() and (d / "device/name").exists():
                d = d / "device"  # drivers on the old registration (ACPI power_meter) keep their files there
            try:
                driver = (d / "name").read_text().strip()
            except OSError:
                continue
            if not self._wanted(driver):
                log.debug("hwmon %s (%s): left to its own source or denied", d.name, driver)
                continue
            # Keyed by the device behind the hwmon number (i2c 1-0040, ACPI000D:00), which stays put
            # where hwmonN may change across boots and rebinds.
            link = hw / "device"
            ident = re.sub(r"[^A-Za-z0-9_.:-]", "_", link.resolve().name) if link.exists() else hw.name
            sensor = hw.name
            for ch in self._scan(d, driver):
                key = f"hwmon:{driver}:{ident}:{ch.channel}"
                self._channels[key] = ch
                node = driver in self.whole
                devices.append(DeviceIdentity(
                    index=len(devices), uuid=key, name=f"{driver} {ch.label}",
                    kind=NODE.name if node else HWMON.name, has_energy_counter=ch.energy is not None,
                    labels=(("source", driver),) if node else
                    (("sensor", sensor), ("driver", driver), ("channel", ch.channel), ("label", ch.label)),
                    fast_integration=driver not in WHOLE_NODE))  # ACPI meters average over seconds
        if not devices:
            raise SourceUnavailable(f"no hwmon power or energy channel under {base}")
        return devices

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        return self._channels[device.uuid].power_mw() if self._channels[device.uuid].energy is None else None

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        ch = self._channels[device.uuid]
        if not ch.path.exists():
            raise DeviceLost(f"{ch.path} is gone")
        if ch.energy is not None:
            return DeviceReading(energy_mj=ch.read_int(ch.energy) / 1000.0)
        return DeviceReading(power_mw=ch.power_mw())


def _pairs(value: Any) -> str | None:
    ok = all(isinstance(p, dict) and set(p) <= {"driver", "voltage", "current", "label"}
             and isinstance(p.get("driver"), str) and re.fullmatch(r"in\d+", str(p.get("voltage")))
             and re.fullmatch(r"curr\d+", str(p.get("current"))) for p in value)
    return None if ok else "expected [{driver: NAME, voltage: inN, current: currN, label: TEXT}, ...]"


def _from_config(section: dict[str, Any], ctx: SourceContext) -> list[DeviceSource]:
    if not section["enabled"]:
        return []
    allow = tuple(section["allow_drivers"] or ())
    deny = tuple(section["deny_drivers"]) if section["deny_drivers"] is not None else DEFAULT_DENY
    source = HwmonSource(section["sysfs_root"], allow=allow, deny=deny, pairs=tuple(section["pairs"] or ()),
                         whole_device=tuple(section["whole_device"] or ()))
    source.optional = True
    return [source]


register("source", "hwmon", _from_config, "generic hwmon power and energy sensors (ina2xx, ACPI power meters, …)",
         schema={"enabled": (bool, False, None), "sysfs_root": (str, "/", None),
                 "allow_drivers": (list, None, names("driver names")),
                 "deny_drivers": (list, None, names("driver names")),
                 "pairs": (list, None, _pairs), "whole_device": (list, None, names("driver names"))})

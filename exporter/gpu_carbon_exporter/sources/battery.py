"""Battery-powered devices: ``sys/class/power_supply/*`` of type ``Battery``.

What is measured is the battery's **discharge power**: while the device runs on its battery
(``status`` Discharging) that is the whole device's consumption; ``power_now`` (µW) where the
driver has it, else ``current_now`` (µA) × ``voltage_now`` (µV). While it is charging, full, or
otherwise on external power, the battery supplies nothing and the metric reads 0 W: the device
then draws from the wall, which this source does not see (pair it with a wall meter, or an hwmon
or ACPI sensor, for those periods). The charging power is never counted as consumption
(docs/edge.md). A battery that disappears (removed) is a lost device until it comes back.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..plugins import SourceContext, register
from .base import SYSFS_SCHEMA, DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, SourceUnavailable

KIND = "battery"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as err:
        raise DeviceLost(f"{path}: {err.strerror or err}") from err


class BatterySource(DeviceSource):
    name = "battery"
    noun = "battery"

    def __init__(self, root: str | Path = "/", clock=time.monotonic) -> None:
        self.root, self.clock = Path(root), clock
        self._paths: dict[str, Path] = {}

    def open(self) -> list[DeviceIdentity]:
        devices = []
        for d in sorted((self.root / "sys/class/power_supply").glob("*")):
            try:
                if (d / "type").read_text().strip() != "Battery":
                    continue
            except OSError:
                continue
            if not (d / "power_now").exists() and not ((d / "current_now").exists() and (d / "voltage_now").exists()):
                continue
            key = f"battery:{d.name}"
            self._paths[key] = d
            devices.append(DeviceIdentity(index=len(devices), uuid=key, name=d.name, kind=KIND, has_energy_counter=False,
                                          labels=(("battery", d.name),)))
        if not devices:
            raise SourceUnavailable(f"no battery with power_now or current_now/voltage_now under "
                                    f"{self.root / 'sys/class/power_supply'}")
        return devices

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        d = self._paths[device.uuid]
        if _read(d / "status") != "Discharging":
            return 0  # on external power: the battery supplies nothing
        if (d / "power_now").exists():
            return abs(int(_read(d / "power_now"))) // 1000  # µW; some drivers sign it
        return abs(int(_read(d / "current_now"))) * abs(int(_read(d / "voltage_now"))) // 10**9  # µA × µV → mW

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        if not self._paths[device.uuid].exists():
            raise DeviceLost(f"{self._paths[device.uuid]} is gone (battery removed)")
        try:
            return DeviceReading(power_mw=self.read_power_mw(device))
        except ValueError as err:
            raise DeviceLost(f"{self._paths[device.uuid]}: {err}") from err


def _from_config(section: dict[str, Any], ctx: SourceContext) -> list[DeviceSource]:
    if not section["enabled"]:
        return []
    source = BatterySource(section["sysfs_root"])
    source.optional = True
    return [source]


register("source", "battery", _from_config, "battery discharge power of battery-powered devices (power_supply)",
         schema=SYSFS_SCHEMA)

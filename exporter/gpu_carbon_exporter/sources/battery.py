"""Battery-powered devices: ``sys/class/power_supply/*`` of type ``Battery``.

What is measured is the battery's **discharge power**: while the device runs on its battery
(``status`` Discharging) that is the whole device's consumption; ``power_now`` (µW) where the
driver has it, else ``current_now`` (µA) × ``voltage_now`` (µV). While it is charging, full, or
otherwise on external power, the battery supplies nothing and the metric reads 0 W: the device
then draws from the wall, which this source does not see (pair it with a wall meter, or an hwmon
or ACPI sensor, for those periods). The charging power is never counted as consumption
(docs/edge.md). It measures the whole device, so it is a whole-node meter (the ``node`` kind,
``source="battery"``). A removed battery supplies nothing; with none left the device is lost
until one comes back.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..plugins import SourceContext, register
from .base import SYSFS_SCHEMA, DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, SourceUnavailable
from .whole_node import NODE


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as err:
        raise DeviceLost(f"{path}: {err.strerror or err}") from err


class BatterySource(DeviceSource):
    """One whole-device meter: the discharge power of every battery together (some laptops carry
    two). It is the ``node`` kind (``source="battery"``), like a BMC: the CPU zones and GPUs measured
    on their own are inside it, so only its rest is accounted, and the disks' estimate is not."""

    name = "battery"
    noun = "battery"

    def __init__(self, root: str | Path = "/", clock=time.monotonic) -> None:
        self.root, self.clock = Path(root), clock
        self._paths: list[Path] = []

    def open(self) -> list[DeviceIdentity]:
        self._paths = []  # a reopened source (a device lost and back) starts afresh
        for d in sorted((self.root / "sys/class/power_supply").glob("*")):
            try:
                if (d / "type").read_text().strip() != "Battery":
                    continue
            except OSError:
                continue
            if (d / "power_now").exists() or ((d / "current_now").exists() and (d / "voltage_now").exists()):
                self._paths.append(d)
        if not self._paths:
            raise SourceUnavailable(f"no battery with power_now or current_now/voltage_now under "
                                    f"{self.root / 'sys/class/power_supply'}")
        # Integrated at sampling.integration_hz like any power gauge: a fuel gauge that updates once a
        # second is then read as the step function it is, not a line between one-second points.
        return [DeviceIdentity(index=0, uuid="battery", name="+".join(d.name for d in self._paths),
                               kind=NODE.name, has_energy_counter=False, labels=(("source", "battery"),))]

    def _one_mw(self, d: Path) -> int:
        if _read(d / "status") != "Discharging":
            return 0  # on external power: the battery supplies nothing
        if (d / "power_now").exists():
            return abs(int(_read(d / "power_now"))) // 1000  # µW; some drivers sign it
        return abs(int(_read(d / "current_now"))) * abs(int(_read(d / "voltage_now"))) // 10**9  # µA × µV → mW

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        present = [d for d in self._paths if d.exists()]
        if not present:
            raise DeviceLost("every battery is gone (removed)")
        try:
            return sum(self._one_mw(d) for d in present)  # a removed second battery supplies nothing
        except ValueError as err:
            raise DeviceLost(f"battery: {err}") from err

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        return DeviceReading(power_mw=self.read_power_mw(device))


def _from_config(section: dict[str, Any], ctx: SourceContext) -> list[DeviceSource]:
    if not section["enabled"]:
        return []
    source = BatterySource(section["sysfs_root"])
    source.optional = True
    return [source]


register("source", "battery", _from_config, "battery discharge power of battery-powered devices (power_supply)",
         schema=SYSFS_SCHEMA)

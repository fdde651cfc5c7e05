"""CPU energy from Intel/AMD RAPL through the powercap sysfs interface.

Zones: ``sys/class/powercap/intel-rapl:*`` (MSR) and ``intel-rapl-mmio:*`` (MMIO, used
only for zones the MSR interface lacks). AMD exposes its RAPL through the same driver.
``energy_uj`` wraps at ``max_energy_range_uj``. The source reports the register itself
(converted to mJ) and declares the wrap (``energy_wrap_mj``), so the meter's deltas are
wrap-safe within a run and across restarts: downtime shorter than one wrap is recovered
exactly from the saved register value, and a longer one is never over-counted. Nested zones
never double count: with ``psys`` only psys is accounted (it contains the package); otherwise
packages and DRAM are, and core/uncore (inside the package) are exposed but not accounted.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..kinds import Accounting, DeviceKind, register_kind
from ..plugins import register
from .base import (DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, DeviceUnreadable,
                   SYSFS_SCHEMA, SourceUnavailable, sysfs_factory)

log = logging.getLogger(__name__)
# CPU zones, RAPL's and estimated ones: only the accounted zones count (core and uncore are inside the package).
CPU = register_kind(DeviceKind(name="cpu", label="CPU zone", doc="CPU power zone", accounting=Accounting.MARKED,
                               order=50))

PERMISSION_HINT = ("{path}: permission denied. Since CVE-2020-8694 energy_uj is readable by root only: "
                   "run the exporter as root, or make it readable at boot (e.g. a udev rule or "
                   "`chmod 0444 /sys/class/powercap/intel-rapl*/energy_uj`)")


class _Zone:
    def __init__(self, path: Path) -> None:
        self.path, self.name = path, (path / "name").read_text().strip()
        self.domain = self.name.split("-")[0]
        self.max_uj = int((path / "max_energy_range_uj").read_text().strip())
        self.last_raw: int | None = None
        self.last_t: float | None = None

    def read_uj(self) -> int:
        try:
            return int((self.path / "energy_uj").read_text().strip())
        except PermissionError as err:
            raise DeviceUnreadable(PERMISSION_HINT.format(path=self.path / "energy_uj")) from err
        except (OSError, ValueError) as err:
            raise DeviceLost(f"{self.path}: {err}") from err


class RaplSource(DeviceSource):
    name = "rapl"
    noun = "RAPL zone"

    def __init__(self, root: str | Path = "/", clock=time.monotonic) -> None:
        self.root, self.clock = Path(root), clock
        self._zones: dict[str, _Zone] = {}

    def open(self) -> list[DeviceIdentity]:
        base = self.root / "sys/class/powercap"
        msr = sorted(base.glob("intel-rapl:*"))
        mmio = sorted(base.glob("intel-rapl-mmio:*"))
        zones = [_Zone(p) for p in msr]
        have = {(z.path.name.count(":"), z.name) for z in zones}
        zones += [z for z in (_Zone(p) for p in mmio) if (z.path.name.count(":"), z.name) not in have]
        if not zones:
            raise SourceUnavailable(f"no RAPL powercap zones under {base}")
        has_psys = any(z.domain == "psys" for z in zones)
        devices = []
        for i, z in enumerate(zones):
            top = z.path.name.count(":") == 1
            accounted = z.domain == "psys" if has_psys else (top and z.domain == "package") or z.domain == "dram"
            key = f"rapl:{z.path.name}"
            self._zones[key] = z
            devices.append(DeviceIdentity(index=i, uuid=key, name=z.name, kind=CPU.name, has_energy_counter=True,
                                          labels=(("zone", z.path.name), ("domain", z.domain)), accounted=accounted,
                                          energy_wrap_mj=z.max_uj / 1000.0))
        return devices

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        return self.read(device, slow=False).power_mw

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        z = self._zones[device.uuid]
        raw, now = z.read_uj(), self.clock()
        power_mw = None
        if z.last_raw is not None and now > z.last_t:
            delta = raw - z.last_raw if raw >= z.last_raw else raw + z.max_uj - z.last_raw  # wrapped
            power_mw = int(delta / (now - z.last_t) / 1000)
        z.last_raw, z.last_t = raw, now
        return DeviceReading(power_mw=power_mw, energy_mj=raw / 1000.0)


register("source", "rapl", sysfs_factory(RaplSource), "CPU package and DRAM energy from RAPL (powercap)",
         schema=SYSFS_SCHEMA)

"""Estimated energy of this node's disks (``method="estimated"``): per block device, idle power
× uptime plus (active − idle) × the time the device was busy (``/proc/diskstats``, milliseconds
spent doing I/O, both since boot), by device class: ``hdd`` (``queue/rotational`` 1), ``nvme`` (an NVMe
transport), else ``ssd``. Only physical disks: partitions, loop, RAM, device-mapper and md
devices (which sit on the same disks) are left out.

The disks are inside the node: where a whole-node power source (Redfish, IPMI, an ACPI power
meter) is accounted, it measures them already, and the meter then exposes the estimate's energy
without counting its emissions (docs/edge.md).

Defaults (W, idle/active) are orders of magnitude for current drives, not a measurement: HDD 5/8,
SATA SSD 0.5/3, NVMe 3/8. Put your drives' datasheet figures in ``sources.storage.watts``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..kinds import Accounting, DeviceKind, register_kind
from ..plugins import SourceContext, register
from .base import DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, SourceUnavailable

# Inside the node, so a whole-node meter measures the disks already: accounted only where none is.
STORAGE = register_kind(DeviceKind(name="storage", label="storage", doc="storage", accounting=Accounting.MARKED,
                                   covered_by_node_meter=True, estimate=True, legend="disks", order=60))
DEFAULT_WATTS = {"hdd": (5.0, 8.0), "ssd": (0.5, 3.0), "nvme": (3.0, 8.0)}


def busy_ms(diskstats: Path) -> dict[str, int]:
    """Block device -> milliseconds spent doing I/O (field 10 after the name)."""
    out = {}
    for line in diskstats.read_text().splitlines():
        f = line.split()
        if len(f) >= 14:
            out[f[2]] = int(f[12])
    return out


class StorageEstimate(DeviceSource):
    name = "storage"
    noun = "disk (estimated)"

    def __init__(self, root: str | Path = "/", watts: dict[str, tuple[float, float]] | None = None,
                 clock=time.monotonic) -> None:
        self.root, self.clock = Path(root), clock
        self.watts = {**DEFAULT_WATTS, **(watts or {})}
        self._class: dict[str, str] = {}
        self._last: dict[str, tuple[int, float]] = {}

    def _device_class(self, name: str) -> str | None:
        block = self.root / "sys/block" / name
        if not (block / "device").exists() or name.startswith("sr"):
            return None  # virtual (loop, ram, dm-*, md*) or an optical drive
        try:
            if (block / "removable").read_text().strip() == "1":
                return None  # a USB stick or card reader: not the node's storage
        except OSError:
            pass
        try:
            rotational = (block / "queue/rotational").read_text().strip() == "1"
        except OSError:
            rotational = False
        return "hdd" if rotational else "nvme" if name.startswith("nvme") else "ssd"

    def open(self) -> list[DeviceIdentity]:
        devices = []
        for name in sorted(busy_ms(self.root / "proc/diskstats")):
            cls = self._device_class(name)
            if cls is None:
                continue
            self._class[name] = cls
            # A cumulative counter since boot: idle power × uptime + (active − idle) × busy time, so
            # no busy millisecond is lost between samples or while the exporter is down.
            devices.append(DeviceIdentity(index=len(devices), uuid=f"disk:{name}", name=name, kind=STORAGE.name,
                                          has_energy_counter=True, counter_method="estimated", fast_integration=False,
                                          labels=(("device", name), ("class", cls))))
        if not devices:
            raise SourceUnavailable("no physical block device in /proc/diskstats")
        return devices

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        return None  # a counter: the meter integrates nothing

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        name = device.name
        try:
            ms = busy_ms(self.root / "proc/diskstats")[name]
            uptime = float((self.root / "proc/uptime").read_text().split()[0])
        except (OSError, KeyError, ValueError, IndexError) as err:
            raise DeviceLost(f"disk {name}: {err!r}") from err
        idle, active = self.watts[self._class[name]]
        busy_s = min(ms / 1000, uptime)
        last = self._last.get(name)
        self._last[name] = (ms, uptime)
        power = None
        if last is not None and uptime > last[1] and ms >= last[0]:
            busy = min((ms - last[0]) / 1000 / (uptime - last[1]), 1.0)
            power = int((idle + (active - idle) * busy) * 1000)
        return DeviceReading(power_mw=power, energy_mj=(idle * uptime + (active - idle) * busy_s) * 1000)


def _watts(value: Any) -> str | None:
    ok = isinstance(value, dict) and all(
        k in DEFAULT_WATTS and isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and
                                                                          0 <= x <= 100 for x in v) and v[0] <= v[1]
        for k, v in value.items())
    return None if ok else "expected {hdd|ssd|nvme: [idle W, active W]} with 0 <= idle <= active <= 100"


def _from_config(section: dict[str, Any], ctx: SourceContext) -> list[DeviceSource]:
    if not section["enabled"]:
        return []
    watts = {k: (float(v[0]), float(v[1])) for k, v in (section["watts"] or {}).items()}
    return [StorageEstimate(section["root"], watts)]


register("source", "storage", _from_config, "estimated energy of this node's disks (busy time × power by class)",
         kept_in_simulation=True,  # the host's own counters: a simulated node carries them too
         schema={"enabled": (bool, False, None), "root": (str, "/", None), "watts": (dict, None, _watts)})

"""The small interface every hardware source implements, and where units are converted.

Units: sources read and report the hardware's native units — names say which
(``power_mw``, ``energy_mj``, ``sm_clock_mhz``, ``gpu_util_pct``). They become base units
(W, J, Hz, ratio 0-1) exactly once, with the constants of ``names.py`` (re-exported here): in the accounting
(``accounting/devices.py``) for energy (mJ -> J) and power it integrates (mW -> W), in the
collector for every gauge it exposes. Carbon is grams; intensity gCO2e/kWh (the tariff every
source quotes), turned into g/J with ``JOULES_PER_KWH``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

# What a device is, and the rules that follow from it, are declared with its source (``kinds.py``);
# re-exported for the collector and the meter, which name devices by kind.
from ..kinds import kind_doc as kind_doc, kind_label as kind_label
# Defined in names.py; the meter, the collector and the simulator import them from here.
from ..names import JOULES_PER_KWH, MEGA, MILLI, PERCENT  # noqa: F401


class SourceUnavailable(RuntimeError):
    """The whole source cannot start (library or driver missing)."""


class DeviceLost(RuntimeError):
    """One device stopped answering; the others keep reporting."""


class DeviceStale(RuntimeError):
    """A device read on its own poller has no fresh reading now; retried at the next sample."""


class DeviceUnreadable(DeviceLost):
    """A device that exists but cannot be read (e.g. permission denied)."""


@dataclass(frozen=True)
class MigInstance:
    """A MIG instance of a parent GPU."""

    uuid: str
    gpu_instance_id: int | None
    compute_instance_id: int | None
    index: int
    sm_count: int | None = None  # streaming multiprocessors of the instance (for splitting energy)


@dataclass(frozen=True)
class DeviceIdentity:
    """Static identity of one device, read once when the source opens."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str = ""
    has_energy_counter: bool = True
    mig_enabled: bool = False
    mig_instances: tuple[MigInstance, ...] = ()
    # What the device is: the name of a registered kind (kinds.py; GPUs, sources/nvml.py, by default).
    kind: str = "gpu"
    # Who made a GPU ("nvidia", "amd", "intel"): every vendor's GPUs are the one kind "gpu" (a joule is
    # a joule), told apart by this. NVML's GPUs keep the default; meaningless for other kinds. Not rendered yet.
    vendor: str = "nvidia"
    # Kind-specific labels (name, value), the same names for every device of a kind.
    labels: tuple[tuple[str, str], ...] = ()
    # False for a part of another accounted device (a sub-rail, a nested RAPL zone):
    # its energy is exposed but it gets no emissions, so sums never double count.
    accounted: bool = True
    # False for slow sources (BMCs): integrated at full samples only, not at integration_hz.
    fast_integration: bool = True
    # How the energy is measured when there is no hardware counter: "integrated" (the power gauge),
    # "integrated_average" (the 1-s average power field) or "estimated".
    method_without_counter: str = "integrated"
    # A hardware counter that wraps at this value (mJ), like RAPL's; None for counters that only reset.
    energy_wrap_mj: float | None = None
    # The method label of a device with a counter: "counter" (hardware), or "estimated" for an
    # estimate kept as a cumulative counter (network bytes, disk busy time) so no energy is lost.
    counter_method: str = "counter"


@dataclass(frozen=True)
class ProcessInfo:
    """A process on a GPU, as NVML lists it (or as its DRM client usage stats show it)."""

    pid: int
    used_memory_bytes: int | None = None
    # Its share of the GPU's compute over the last interval, percent: NVML's SM utilisation, or the
    # engine time of its DRM clients (attribution/fdinfo.py), which is not a whole number.
    sm_util_pct: float | None = None
    gpu_instance_id: int | None = None  # MIG


@dataclass(frozen=True)
class ClientUsage:
    """What the DRM clients of one GPU used over the last interval, from their usage stats."""

    busy_pct: float | None  # the busiest engine class, percent of its capacity; None: not known yet
    processes: tuple[ProcessInfo, ...] = ()


@dataclass(frozen=True)
class ReaderRun:
    """The last run of a reader that sources share: whether it read everything it should have, and how long
    it took (s, performance counter)."""

    success: bool
    duration_s: float


class SharedReader(Protocol):
    """A reader several sources share (the DRM client stats' scan of /proc), shown as a collector of its
    own (``collector`` label ``name``): the meter asks each source for its ``shared_readers()``."""

    name: str

    def take_run(self) -> ReaderRun | None:
        """Its last run since the previous call; None where it has not run since."""


class DrmClients(SharedReader, Protocol):
    """Per-process usage of GPUs whose driver keeps no process list of its own (xe, i915, amdgpu),
    read from /proc/PID/fdinfo (``attribution/fdinfo.py``); start-up hands it to the sources that
    read such GPUs through ``SourceContext.drm_clients``."""

    def usage(self, pci_bus_id: str) -> ClientUsage:
        """The clients of the GPU at that PCI address, over the interval since the last sample."""


@dataclass
class DeviceReading:
    """One sample of one device. ``None`` means unsupported or unavailable.

    Units are native: milliwatts, millijoules, percent, MHz, bytes, celsius.
    """

    power_mw: int | None = None
    power_instant_mw: int | None = None
    power_average_mw: int | None = None
    energy_mj: float | None = None
    gpu_util_pct: int | None = None
    memory_util_pct: int | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_c: int | None = None
    sm_clock_mhz: int | None = None
    power_limit_mw: int | None = None
    # Processes on the device, when attribution is enabled.
    processes: list[ProcessInfo] | None = None
    errors: list[str] = field(default_factory=list)


class DeviceSource(ABC):
    """A source of devices. ``name`` is the value of the ``collector`` label."""

    name: str = "source"
    # How logs name this source's devices ("RAPL zone"); None: by their kind ("GPU", "CPU zone").
    noun: str | None = None
    # Auto-detected sources (Jetson, RAPL) are skipped quietly where the hardware is absent.
    optional: bool = False

    @abstractmethod
    def open(self) -> list[DeviceIdentity]:
        """Initialise and enumerate devices. Raises SourceUnavailable."""

    @abstractmethod
    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        """Read one device. ``slow`` also refreshes rarely-changing values.

        Raises DeviceLost when the device stopped answering.
        """

    @abstractmethod
    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        """Power only, for the fast integration loop. Raises DeviceLost."""

    def info(self) -> dict[str, str]:
        """Source-wide labels for an info metric (e.g. driver version)."""
        return {}

    def shared_readers(self) -> tuple[SharedReader, ...]:
        """Readers this source shares with others, each shown as a collector of its own (the DRM client
        stats); none by default."""
        return ()

    def close(self) -> None:
        """Release the library."""


# Config keys of a source read from a sysfs tree and detected automatically (Jetson, RAPL).
SYSFS_SCHEMA = {"enabled": (bool, True, None), "sysfs_root": (str, "/", None)}


def sysfs_factory(cls: type) -> "object":
    """Plug-in factory for an auto-detected sysfs source: skipped quietly where its hardware is absent."""
    def factory(section: dict, ctx: object) -> list[DeviceSource]:
        if not section["enabled"]:
            return []
        source = cls(section["sysfs_root"])
        source.optional = True
        return [source]
    return factory


def drm_gpu_factory(cls: type) -> "object":
    """Plug-in factory for a GPU read through its DRM driver's sysfs (amdgpu, xe/i915): skipped quietly
    where there is none, its processes from the DRM client usage stats start-up hands over."""
    def factory(section: dict, ctx: Any) -> list[DeviceSource]:
        if not section["enabled"]:
            return []
        source = cls(section["sysfs_root"], clients=ctx.drm_clients, read_processes=ctx.read_processes)
        source.optional = True
        return [source]
    return factory

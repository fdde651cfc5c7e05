"""The snapshot model: what one sample of the meter holds, typed, for whoever reads it.

The meter builds a ``Snapshot`` after each full sample and swaps it in whole; the collector
renders one (as Kepler's ``Collect`` renders one), the attribution engine fills its
``AttributionSnapshot`` part, and the accounting computes every figure in it (energy,
emissions, water, embodied carbon, the node's rest): a reader never does arithmetic on
counters. Units are base units here (J, g, L, W, s), already converted.

A bottom module: it imports nothing of the package at run time. The device, intensity, job
and provider types its fields name are defined by the layers that produce them, and are
named here for type checkers only; a job's identity (``Job``) is defined here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .carbon.base import Intensity
    from .carbon.live import Forecast, ProviderStats
    from .sources.base import DeviceIdentity, DeviceReading


_T = TypeVar("_T")


def shallow_copy(obj: _T) -> _T:
    """A shallow copy of a counters record (its containers, if any, are shared: copy those too).

    Several times faster than ``dataclasses.replace`` (which re-runs ``__init__``): every sample
    copies every device's and job's counters into its snapshot."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


@dataclass
class Counters:
    """Monotonic per-device counters (persisted). Energy in J, emissions in g, water in L."""

    energy_j: float = 0.0
    emissions_g: float = 0.0
    embodied_g: float = 0.0
    water_l: float = 0.0
    raw_energy_mj: float | None = None  # last hardware counter value, the baseline for deltas
    rest_energy_j: float = 0.0  # whole-node meters: the part not drawn by accounted GPUs and CPUs


@dataclass(frozen=True)
class DeviceSnapshot:
    """One device as last sampled: its reading (native units) and its counters (a copy)."""

    identity: DeviceIdentity
    source: str
    up: bool
    method: str
    reading: DeviceReading | None
    counters: Counters
    emission_rate_g_per_s: float | None


@dataclass(frozen=True)
class CollectorStatus:
    success: bool
    duration_s: float
    last_time: float  # monotonic clock


@dataclass(frozen=True)
class Job:
    """A unit of attribution. ``key`` is unique per node: ``scheduler/id``."""

    id: str
    scheduler: str  # "slurm", "kubernetes", "process", "mapping"
    user: str = ""  # only filled when user labels are enabled
    team: str = ""
    account: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""

    @property
    def key(self) -> str:
        return f"{self.scheduler}/{self.id}"


@dataclass
class JobCounters:
    """One job's counters (the engine's live record; a snapshot holds copies)."""

    job: Job
    energy_allocated_j: float = 0.0
    energy_active_j: float = 0.0
    emissions_allocated_g: float = 0.0
    emissions_active_g: float = 0.0
    embodied_g: float = 0.0  # allocated view: embodied carbon of the GPU time held
    # (vendor, slot): slot the GPU's index (or MIG "gpu.gi"), which each vendor's source counts from 0
    gpus: set[tuple[str, str]] = field(default_factory=set)
    first_seen: float = 0.0
    last_seen: float = 0.0
    gpu_seconds: float = 0.0  # GPU time held (s); shared GPUs split equally, MIG by SM share
    work: dict[str, float] = field(default_factory=dict)  # units of work the job declared: unit -> count
    # Wall clock (unix s) of the first and last accounting step in which the job held a GPU: the span its
    # energy covers, which the report takes as the job's own start and end (persisted, never moved back).
    held_from: float | None = None
    held_until: float | None = None
    # Water for the allocated energy at the configured WUE (L); set in snapshots only, None without a WUE.
    water_l: float | None = None


@dataclass
class GpuBuckets:
    """One GPU's energy no job paid for, in both views, and how it was last split."""

    unallocated_j: float = 0.0
    unallocated_g: float = 0.0
    idle_j: float = 0.0
    idle_g: float = 0.0
    unattributed_j: float = 0.0
    unattributed_g: float = 0.0
    unallocated_embodied_g: float = 0.0
    method: str = "none"


@dataclass(frozen=True)
class AttributionSnapshot:
    jobs: tuple[JobCounters, ...]
    gpus: dict[str, GpuBuckets]  # uuid -> buckets


@dataclass(frozen=True)
class NodeRestPower:
    """Node power not drawn by its GPUs or measured CPU (W), from the node meter ``source``."""

    source: str
    watts: float


@dataclass(frozen=True)
class Snapshot:
    time: float  # wall clock (unix time) of the sample
    devices: tuple[DeviceSnapshot, ...] = ()
    intensity: Intensity | None = None
    pue: float = 1.0
    wue_liters_per_kwh: float | None = None  # water accounted per kWh (None: no water accounting)
    collectors: dict[str, CollectorStatus] = field(default_factory=dict)
    source_info: dict[str, dict[str, str]] = field(default_factory=dict)
    provider_stats: ProviderStats | None = None
    attribution: AttributionSnapshot | None = None
    forecast: Forecast | None = None
    mono: float = 0.0  # monotonic clock of the sample, for staleness
    state_discarded: int = 0  # damaged saved entries set aside at start-up
    provider_up: tuple[str, bool] | None = None  # the intensity provider's name and health (not a device collector)
    # Failed writes of the counters since start, by file: "checkpoint" (counters held meanwhile), "durable".
    state_write_failures: dict[str, int] = field(default_factory=lambda: {"checkpoint": 0, "durable": 0})
    # None unless a node meter and every GPU and measured CPU have a power reading (the accounting decides).
    node_rest_power: NodeRestPower | None = None

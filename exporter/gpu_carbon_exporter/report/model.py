"""What a job report holds, in base units (J, g, L, s, W); kWh and kg only when rendered."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..names import JOULES_PER_KWH, SECONDS_PER_HOUR

# The bound the tests hold every report total to against ground truth (docs/report.md), as a
# relative standard uncertainty of one job's measured energy and emissions.
MEASUREMENT_REL_UNCERTAINTY = 0.01


@dataclass
class NodeTotals:
    """One node's share of the job (a multi-node job is the sum of its nodes)."""

    node: str
    energy_j: float = 0.0  # allocated view: active share + equal share of idle
    active_j: float = 0.0  # active view
    grams: float = 0.0  # operational, PUE included
    embodied_g: float = 0.0
    water_l: float = 0.0
    gpu_seconds: float = 0.0
    work: dict[str, float] = field(default_factory=dict)  # unit -> count


@dataclass
class GpuRow:
    """A GPU (or MIG instance) the job held. ``gpu_energy_j`` is the whole physical GPU's energy over
    the job's time, also where the job shared it."""

    node: str
    gpu: str
    gpu_energy_j: float | None = None
    mean_utilization: float | None = None  # 0-1, the whole GPU's
    peak_power_w: float | None = None
    vendor: str = ""  # each vendor numbers its GPUs from 0; "" from an exporter before jobs' GPUs named it

    @property
    def name(self) -> str:
        """The GPU on its node: ``amd 0``; the index alone where the vendor is not known."""
        return f"{self.vendor} {self.gpu}" if self.vendor else self.gpu


@dataclass
class Gap:
    """A stretch without samples of the job from a node (the exporter or its scrapes were down)."""

    node: str
    start: float
    end: float


@dataclass
class IntensitySource:
    zone: str
    source: str
    signal: str
    share: float  # of the job's time


@dataclass
class JobReport:
    job_id: str
    cluster: str
    scheduler: str
    owner: dict[str, str]
    start: float  # unix s: the start of the span its exporters counted its energy over (docs/report.md)
    end: float  # unix s: the end of that span
    partial: bool  # still running, or its start is before the look-back: the figures are so far
    partial_reason: str
    source: str  # where the figures were read
    nodes: list[NodeTotals]
    gpus: list[GpuRow]
    gaps: list[Gap]
    intensity_sources: list[IntensitySource]
    fallback_share: float | None  # share of the job's time any of its zones was on a fallback
    pue: float | None
    mean_utilization: float | None
    peak_power_w: float | None
    methods: list[str]  # energy methods of its GPUs: counter, integrated_average, integrated
    work: dict[str, float]  # unit -> count (from the exporter, or --work)
    work_source: str  # "exporter", "command line" or ""
    power: list[tuple[float, float, float]] = field(default_factory=list)  # the job's power: (from, to, W) bins
    cumulative: list[tuple[float, float, float]] = field(default_factory=list)  # (t, J, g) since start
    intensity: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # node -> (t, g/kWh)
    gpu_power: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # "node/gpu" -> (t, W)
    version: str = ""
    restarts: int = 0  # drops of the job's energy counter: exporter restarts (docs/report.md)

    # -- totals ------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        return max(self.end - self.start, 0.0)

    @property
    def energy_j(self) -> float:
        return sum(n.energy_j for n in self.nodes)

    @property
    def active_j(self) -> float:
        return sum(n.active_j for n in self.nodes)

    @property
    def grams(self) -> float:
        return sum(n.grams for n in self.nodes)

    @property
    def embodied_g(self) -> float:
        return sum(n.embodied_g for n in self.nodes)

    @property
    def water_l(self) -> float:
        return sum(n.water_l for n in self.nodes)

    @property
    def gpu_hours(self) -> float:
        return sum(n.gpu_seconds for n in self.nodes) / SECONDS_PER_HOUR

    @property
    def kwh(self) -> float:
        return self.energy_j / JOULES_PER_KWH

    @property
    def intensity_paid(self) -> float | None:
        """g CO₂e per kWh actually paid: emissions ÷ energy, i.e. the intensity weighted by the job's
        own energy over time (PUE included)."""
        return self.grams / self.kwh if self.energy_j > 0 else None

    @property
    def grid_intensity(self) -> float | None:
        """The grid's intensity weighted by the job's energy: emissions ÷ (energy × PUE)."""
        return self.intensity_paid / self.pue if self.intensity_paid is not None and self.pue else None

    @property
    def mean_power_w(self) -> float | None:
        return self.energy_j / self.duration_s if self.duration_s > 0 else None

    def per_unit(self) -> dict[str, tuple[float, float]]:
        """Per unit of work: unit -> (kWh per unit, g CO₂e per unit)."""
        return {u: (self.kwh / n, self.grams / n) for u, n in self.work.items() if n > 0}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["totals"] = {"duration_s": self.duration_s, "energy_kwh": self.kwh,
                          "active_kwh": self.active_j / JOULES_PER_KWH,
                          "operational_g": self.grams, "embodied_g": self.embodied_g,
                          "total_g": self.grams + self.embodied_g, "water_l": self.water_l, "gpu_hours": self.gpu_hours,
                          "mean_power_w": self.mean_power_w, "intensity_paid_g_per_kwh": self.intensity_paid,
                          "grid_intensity_g_per_kwh": self.grid_intensity,
                          "per_unit": {u: {"kwh": k, "g": g} for u, (k, g) in self.per_unit().items()}}
        return data

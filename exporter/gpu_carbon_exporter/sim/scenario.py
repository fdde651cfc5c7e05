"""Scenario files: devices, power patterns, jobs, intensity timelines, PUE.

The format is documented in docs/scenario.md. ``GroundTruth`` gives exact
energy and emissions for any device, job and time range.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..carbon.timeline import Timeline, intensity_problem
from ..errors import ConfigError
from ..schema import show
from ..sources.base import JOULES_PER_KWH
from ..yamlio import parse_yaml, read_yaml
from . import BUILTIN
from . import patterns as P
from .models import AMD_UNIQUE_ID, DeviceModel, read_driver, read_model
from .reader import ScenarioError, Reader

log = logging.getLogger(__name__)


# NVML refreshes its power readings every 100 ms. The average field is over 1 s;
# the instantaneous one over a 25 ms window (A100/H100 behaviour).
READING_PERIOD_S = 0.1
AVERAGE_WINDOW_S = 1.0
INSTANT_WINDOW_S = 0.025


@dataclass
class SimDevice:
    index: int
    model: DeviceModel
    pattern: P.Pattern
    uuid: str
    energy_offset_mj: int = 0
    mig_instances: int = 0
    driver: str = "nvidia"  # the kernel driver it is bound to (models.DRIVERS)

    def window_power(self, t: float, window_s: float) -> float:
        """Mean power (W) over the ``window_s`` before the last 100-ms refresh."""
        tb = math.floor(t / READING_PERIOD_S) * READING_PERIOD_S
        return self.pattern.mean_power(tb - window_s, tb) if tb > 0 else self.pattern.power(0.0)

    def utilization(self, t: float) -> float:
        """GPU busy ratio 0-1, derived from power over the last second."""
        p = self.window_power(t, AVERAGE_WINDOW_S)
        span = self.model.max_w - self.model.idle_w
        return min(max((p - self.model.idle_w) / span, 0.0), 1.0)


CYCLE_ANCHOR = 1767225600.0  # 2026-01-01T00:00:00Z


@dataclass
class SimJob:
    id: str
    user: str
    team: str
    start_s: float
    end_s: float
    devices: tuple[int, ...]
    share: float = 1.0
    mig_instance: int | None = None  # runs on this MIG instance of its (single) device
    repeat_s: float | None = None  # the scenario's cycle: the job runs again every repeat_s

    def active(self, t: float) -> bool:
        """Whether the job runs at scenario time ``t``."""
        if self.repeat_s is not None:
            t = t % self.repeat_s
        return self.start_s <= t < self.end_s

    def intervals(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """The stretches of [t0, t1] during which the job runs."""
        if self.repeat_s is None:
            a, b = max(t0, self.start_s), min(t1, self.end_s)
            return [(a, b)] if b > a else []
        out = []
        k = math.floor(t0 / self.repeat_s)
        while k * self.repeat_s < t1:
            base = k * self.repeat_s
            a, b = max(t0, base + self.start_s), min(t1, base + min(self.end_s, self.repeat_s))
            if b > a:
                out.append((a, b))
            k += 1
        return out


@dataclass
class SimEdge:
    board: str | None = None  # orin, xavier, nano, thor
    board_pattern: P.Pattern | None = None
    rapl_pattern: P.Pattern | None = None  # total package power
    rapl_packages: int = 1
    psys: bool = False


@dataclass
class Scenario:
    devices: list[SimDevice]
    jobs: list[SimJob] = field(default_factory=list)
    zone: str = "SIM"
    pue: float = 1.0
    intensity: dict[str, Timeline] = field(default_factory=dict)
    start_time: float | None = None
    name: str = "scenario"
    edge: SimEdge = field(default_factory=SimEdge)
    cycle_s: float | None = None  # jobs and intensity repeat with this period

    def epoch(self) -> float | None:
        """Unix time of scenario t=0 when fixed: ``start_time``, else for a cyclic scenario a fixed
        anchor (2026-01-01T00:00Z), so that restarts see the same counters a real driver would."""
        if self.start_time is not None:
            return self.start_time
        return CYCLE_ANCHOR if self.cycle_s is not None else None


def _pattern(r: Reader, base: Path) -> P.Pattern:
    kind = r.get("pattern", str)
    f = lambda k, **kw: r.get(k, float, **kw)  # noqa: E731
    try:
        if kind == "constant":
            r.check_keys({"pattern", "watts"})
            return P.Constant(f("watts", minimum=0))
        if kind == "steps":
            r.check_keys({"pattern", "steps", "repeat_s"})
            steps = r.get("steps", list)
            pattern: P.Pattern = P.PiecewiseConstant([float(s[0]) for s in steps], [float(s[1]) for s in steps])
            repeat = r.get("repeat_s", float, None)
            return P.Periodic(pattern, repeat) if repeat else pattern
        if kind == "square":
            r.check_keys({"pattern", "period_s", "duty", "high_w", "low_w", "phase_s"})
            return P.Square(f("period_s", minimum=0.001), f("duty"), f("high_w", minimum=0),
                            f("low_w", minimum=0), f("phase_s", default=0.0))
        if kind == "bursts":
            r.check_keys({"pattern", "seed", "low_w", "high_w", "mean_on_s", "mean_off_s", "horizon_s"})
            return P.bursts(r.get("seed", int), f("low_w", minimum=0), f("high_w", minimum=0),
                            f("mean_on_s", minimum=0.001), f("mean_off_s", minimum=0.001),
                            f("horizon_s", default=3600.0, minimum=1))
        if kind == "schedule":
            r.check_keys({"pattern", "segments", "repeat_s"})
            segs = [r.child(f"segments[{i}]", x) for i, x in enumerate(r.get("segments", list))]
            starts = [s.get("at_s", float, minimum=0) for s in segs]
            for s in segs:
                s.data = {k: v for k, v in s.data.items() if k != "at_s"}
            pattern = P.Schedule(starts, [_pattern(s, base) for s in segs])
            repeat = r.get("repeat_s", float, None)
            return P.Periodic(pattern, repeat) if repeat else pattern
        if kind == "replay":
            r.check_keys({"pattern", "csv", "loop"})
            return P.replay_csv(base / r.get("csv", str), r.get("loop", bool, False))
    except (ValueError, TypeError, IndexError, OSError) as err:
        r.fail(f"invalid {kind} pattern: {err}")
    r.fail(f"unknown pattern {show(kind)}; use constant, steps, square, bursts, schedule or replay", "pattern")


def _devices(r: Reader, base: Path) -> list[SimDevice]:
    out: list[SimDevice] = []
    for i, raw in enumerate(r.get("devices", list, [])):
        d = r.child(f"devices[{i}]", raw)
        d.check_keys({"model", "count", "idle_w", "max_w", "power", "energy_counter", "power_usage",
                      "power_fields", "energy_offset_mj", "mig_instances", "vendor", "gpu_metrics", "driver"})
        model = read_model(d)
        driver = read_driver(d, model)
        pattern = _pattern(d.child("power", d.get("power", dict)), base)
        _warn_above_max(d, pattern, model)
        for _ in range(d.get("count", int, 1, minimum=1)):
            idx = len(out)
            # AMD cards are keyed by their unique_id (sources/amdgpu.py card_uuid), as the fake tree writes it.
            uuid = f"amdgpu-{AMD_UNIQUE_ID + idx:016x}" if model.amd else f"GPU-5e3a0000-0000-4000-8000-{idx:012d}"
            out.append(SimDevice(idx, model, pattern, uuid, d.get("energy_offset_mj", int, 0, minimum=0),
                                 d.get("mig_instances", int, 0, minimum=0), driver))
    return out


def _warn_above_max(d: Reader, pattern: P.Pattern, model: DeviceModel) -> None:
    """A pattern drawing more than the model's max_w is allowed (a what-if) but probably a typo."""
    peak = max(pattern.power(i * 0.7213) for i in range(5000))  # the first hour, off any round period
    if peak > model.max_w:
        log.warning("%s: %s.power: draws up to %.0f W, above %s's max_w of %.0f W", d.source, d.path, peak,
                    model.name, model.max_w)


def _edge(r: Reader, base: Path) -> SimEdge:
    from .sysfs import BOARDS

    edge = SimEdge()
    if "edge" in r.data:
        e = r.child("edge", r.get("edge", dict))
        e.check_keys({"board", "power"})
        edge.board = e.get("board", str)
        if edge.board not in BOARDS:
            e.fail(f"must be one of {', '.join(BOARDS)}", "board")
        edge.board_pattern = _pattern(e.child("power", e.get("power", dict)), base)
    if "rapl" in r.data:
        c = r.child("rapl", r.get("rapl", dict))
        c.check_keys({"packages", "power", "psys"})
        edge.rapl_packages = c.get("packages", int, 1, minimum=1)
        edge.psys = c.get("psys", bool, False)
        edge.rapl_pattern = _pattern(c.child("power", c.get("power", dict)), base)
    return edge


def _jobs(r: Reader, n_devices: int, cycle_s: float | None = None) -> list[SimJob]:
    jobs = []
    for i, raw in enumerate(r.get("jobs", list, [])):
        j = r.child(f"jobs[{i}]", raw)
        j.check_keys({"id", "user", "team", "start_s", "end_s", "devices", "share", "mig_instance"})
        devices = tuple(j.get("devices", list))
        if any(not isinstance(x, int) or not 0 <= x < n_devices for x in devices):
            j.fail(f"device indices must be in 0..{n_devices - 1}", "devices")
        job = SimJob(str(j.get("id", (str, int))), j.get("user", str, "nobody"), j.get("team", str, ""),
                     j.get("start_s", float, 0.0, minimum=0), j.get("end_s", float, math.inf),
                     devices, j.get("share", float, 1.0, minimum=0), j.get("mig_instance", int, None, minimum=0))
        if job.end_s <= job.start_s:
            j.fail("end_s must be after start_s", "end_s")
        if cycle_s is not None:
            if job.start_s >= cycle_s or (math.isfinite(job.end_s) and job.end_s > cycle_s):
                j.fail(f"a job of a cyclic scenario must fit in its cycle (cycle_s = {cycle_s:g})", "end_s")
            job.repeat_s = cycle_s
        jobs.append(job)
    return jobs


def _intensity(r: Reader, cycle_s: float | None = None) -> dict[str, Timeline]:
    out: dict[str, Timeline] = {}
    for zone, steps in r.get("intensity", dict, {}).items():
        try:
            points = tuple((float(s[0]), float(s[1])) for s in steps)
            if not points or points[0][0] != 0:
                raise ValueError("the first step must be at t = 0")
            for _, value in points:
                if (problem := intensity_problem(value)) is not None:
                    raise ValueError(problem)
            out[str(zone)] = Timeline(points, cycle_s)
        except (ValueError, TypeError, IndexError) as err:
            hint = f" (steps within the cycle, cycle_s = {cycle_s:g})" if cycle_s else ""
            r.fail(f"expected [[t_s, g_per_kwh], ...] from t=0{hint}: {err}", f"intensity.{zone}")
    return out


def parse_scenario(data: Any, source: str = "<scenario>", base: Path = Path(".")) -> Scenario:
    r = Reader(source, data)
    r.check_keys({"name", "devices", "jobs", "zone", "pue", "intensity", "start_time", "edge", "rapl", "cycle_s"})
    cycle = r.get("cycle_s", float, None, minimum=1)
    devices = _devices(r, base)
    edge = _edge(r, base)
    if not devices and edge.board is None and edge.rapl_pattern is None:
        r.fail("at least one device (or an edge board, or rapl) is needed", "devices")
    sc = Scenario(devices=devices, jobs=_jobs(r, len(devices), cycle), zone=str(r.get("zone", str, "SIM")),
                  pue=r.get("pue", float, 1.0, minimum=1.0), intensity=_intensity(r, cycle),
                  start_time=r.get("start_time", float, None), name=r.get("name", str, source), edge=edge,
                  cycle_s=cycle)
    if sc.intensity and sc.zone not in sc.intensity:
        r.fail(f"zone {show(sc.zone)} has no intensity timeline", "zone")
    return sc


def load_scenario(path: str | Path | None) -> Scenario:
    """Load a scenario file; ``None`` or "" loads the built-in demo, a bare name another built-in one."""
    name = str(path or "demo")
    if name in BUILTIN and not Path(name).exists():
        text = resources.files(__package__).joinpath(f"{name}.yaml").read_text()
        return parse_scenario(parse_yaml(text, f"<built-in {name}>"), f"<built-in {name}>")
    path = Path(path)
    if not path.exists():
        raise ScenarioError(f"{path}: no such scenario file, and not a built-in scenario "
                            f"({', '.join(BUILTIN)})")
    try:
        data = read_yaml(path)
    except ConfigError as err:
        raise ScenarioError(str(err)) from None
    return parse_scenario(data, str(path), path.parent)


class GroundTruth:
    """Exact energy (J) and emissions (g CO2e) for devices and jobs over [t0, t1]."""

    def __init__(self, scenario: Scenario) -> None:
        self.sc = scenario

    def device_energy_j(self, index: int, t0: float, t1: float) -> float:
        p = self.sc.devices[index].pattern
        return p.energy(t1) - p.energy(t0)

    def device_emissions_g(self, index: int, t0: float, t1: float, zone: str | None = None) -> float:
        timeline = self.sc.intensity.get(zone or self.sc.zone)
        if timeline is None:
            raise ValueError("scenario has no intensity timeline for that zone")
        grams = 0.0
        for a, b, g_per_kwh in timeline.segments(t0, t1):
            grams += self.device_energy_j(index, a, b) * g_per_kwh / JOULES_PER_KWH
        return grams * self.sc.pue

    def job_energy_j(self, job: SimJob, t0: float, t1: float) -> float:
        """The job's energy as the exporter attributes it (its allocated view, docs/attribution.md;
        the formula is docs/scenario.md's). ``share`` weighs a job against the other holders of
        its GPU, never against the GPU: on each of the job's GPUs, per stretch of constant holders
        H, with E the GPU's energy and I = min(idle_w x seconds, E) its idle energy, the job gets
        (E - I) x share / sum(H's shares) + I / |H|. On MIG, E and I are first cut equally among
        the instances (the simulator's have equal SM counts), then among the instance's holders."""
        total = 0.0
        for a, b in job.intervals(t0, t1):
            for d in job.devices:
                dev = self.sc.devices[d]
                mates = [j for j in self.sc.jobs if d in j.devices and j.mig_instance == job.mig_instance]
                cuts = sorted({a, b, *(x for j in mates for iv in j.intervals(a, b) for x in iv if a < x < b)})
                for lo, hi in zip(cuts, cuts[1:]):
                    parts = max(dev.mig_instances, 1)
                    energy = self.device_energy_j(d, lo, hi)
                    idle = min(dev.model.idle_w * (hi - lo), energy) / parts
                    holders = [j for j in mates if j.active((lo + hi) / 2)]
                    shares = sum(j.share for j in holders)
                    # the exporter's weights: SM utilisation (the simulator reports it x share), else
                    # memory (also x share), else equal: all zero shares split equally
                    weight = job.share / shares if shares > 0 else 1 / len(holders)
                    total += (energy / parts - idle) * weight + idle / len(holders)
        return total

    def job_emissions_g(self, job: SimJob, t0: float, t1: float) -> float:
        """The job's emissions: its energy (job_energy_j) over each stretch of constant intensity
        x that intensity, x PUE."""
        grams = 0.0
        for a, b, g_per_kwh in self.sc.intensity[self.sc.zone].segments(t0, t1):
            grams += self.job_energy_j(job, a, b) * g_per_kwh / JOULES_PER_KWH
        return grams * self.sc.pue

    # The names the end-to-end tests use: the same truth, the exporter's allocated view.
    job_allocated_j = job_energy_j
    job_allocated_g = job_emissions_g

"""A job's report from Prometheus: its counters' raw samples, summed exactly (no extrapolation),
and the context around them (GPUs, power, utilisation, intensity, PUE, gaps)."""
from __future__ import annotations

import math
import re
import statistics
import time
from collections import defaultdict
from typing import Iterable, TypeVar

from .. import __version__
from ..names import (
    GPU_ENERGY_JOULES_TOTAL, GPU_POWER_WATTS, GPU_UTILIZATION_RATIO, GRID_INTENSITY_FALLBACK,
    GRID_INTENSITY_GRAMS_PER_KWH, GRID_INTENSITY_SOURCE_INFO, JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL,
    JOB_EMISSIONS_GRAMS_TOTAL, JOB_END_TIME_SECONDS, JOB_ENERGY_JOULES_TOTAL, JOB_GPU_INFO, JOB_GPU_SECONDS_TOTAL,
    JOB_INFO, JOB_START_TIME_SECONDS, JOB_WATER_LITERS_TOTAL, JOB_WORK_UNITS_TOTAL, PUE_RATIO,
)
from .model import Gap, GpuRow, IntensitySource, JobReport, NodeTotals
from .prom import Prometheus, ReportError, Series

OWNER = ("user", "team", "account", "namespace", "pod")
T = TypeVar("T")
# Node totals read from the job's counters: field -> (metric, extra matchers)
COUNTERS = {
    "energy_j": (JOB_ENERGY_JOULES_TOTAL, ', view="allocated"'),
    "active_j": (JOB_ENERGY_JOULES_TOTAL, ', view="active"'),
    "grams": (JOB_EMISSIONS_GRAMS_TOTAL, ', view="allocated"'),
    "embodied_g": (JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL, ""),
    "water_l": (JOB_WATER_LITERS_TOTAL, ""),
    "gpu_seconds": (JOB_GPU_SECONDS_TOTAL, ""),
}


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# A drop to at least this share of the value before it is an exporter that restored older saved
# counters (a checkpoint, docs/reliability.md), not one that started again from 0.
RESTORED_SHARE = 0.5


def _steps(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """What a job counter counted at each sample: it starts at 0 with the job, so its first value
    counts too. A drop is a restart: to a small value, a reset (the exporter lost its state,
    counting starts again from 0); to at least half the value before, a restore of older saved
    counters (counting goes on from there, the part between the save and the crash counted once)."""
    out, previous = [], 0.0
    for t, v in samples:
        out.append((t, v - previous if v >= previous else (v if v < RESTORED_SHARE * previous else 0.0)))
        previous = v
    return out


def counter_total(samples: list[tuple[float, float]]) -> float:
    """Everything a job counter counted (the rule of ``_steps``)."""
    return sum(step for _, step in _steps(samples))


def restarts(samples: list[tuple[float, float]]) -> int:
    return sum(1 for (_, a), (_, b) in zip(samples, samples[1:]) if b < a)


def merged(series: list[Series]) -> dict[tuple[str, ...], list[tuple[float, float]]]:
    """One time-ordered sample list per node (and view and unit): an exporter restarted under a new
    pod or instance starts a new series, whose first value carries on from the old one's."""
    out: dict[tuple[str, ...], list[tuple[float, float]]] = defaultdict(list)
    for s in series:
        out[(s.labels.get("node", ""), s.labels.get("unit", ""))].extend(s.samples)
    return {k: sorted(v) for k, v in out.items()}


def counter_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """How much a counter rose from its last sample at or before ``start`` to its last at or before
    ``end``, across resets (a device counter that existed before the job)."""
    inside = [(t, v) for t, v in samples if t <= end]
    before = [s for s in inside if s[0] <= start]
    rest = [s for s in inside if s[0] > start]
    previous = before[-1][1] if before else (rest[0][1] if rest else 0.0)
    total = 0.0
    for _, v in rest:
        total += v - previous if v >= previous else v
        previous = v
    return total


# The span each node's exporter saw the job hold a GPU (docs/metrics.md). While the job runs, the end
# is the time of the sample behind every job counter in the same scrape.
SPAN = (JOB_START_TIME_SECONDS, JOB_END_TIME_SECONDS)


def _scrape_key(s: Series) -> tuple:
    """What ties a job counter's series to the span gauges of the same scrape target."""
    return tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("__name__", "view", "unit")))


def sampled_at(counters: list[Series], ends: list[Series]) -> tuple[list[Series], bool]:
    """The counters' samples stamped with the time the exporter sampled them instead of the scrape's:
    the end gauge scraped with them. A counter's value is up to one sampling interval older than its
    scrape, which over a scrape interval or two makes its rate read several percent high or low;
    restamped, a rate is the mean power over the samples' own interval. Also whether every sample
    found its time (not so from an exporter older than the gauge)."""
    times = {_scrape_key(s): dict(s.samples) for s in ends}
    out, complete = [], True
    for s in counters:
        at = times.get(_scrape_key(s), {})
        samples = []
        for t, v in s.samples:
            if t not in at and at and v == 0:
                continue  # scraped before the job's first energy (and its span) was counted: adds nothing
            complete &= t in at
            samples.append((min(at.get(t, t), t), v))  # never after its own scrape (clock skew)
        out.append(Series(s.labels, samples))
    return out, complete


def interval(series: Iterable[Series]) -> float:
    """The scrape interval: the median step between samples."""
    steps = [b[0] - a[0] for s in series for a, b in zip(s.samples, s.samples[1:])]
    return statistics.median(steps) if steps else 15.0


def last_rise(samples: list[tuple[float, float]]) -> float | None:
    rise = None
    for (_, a), (t, b) in zip(samples, samples[1:]):
        if b > a:
            rise = t
    return rise


def raw_chunked(prom: Prometheus, selector: str, start: float, end: float, chunk_s: float = 86400) -> list[Series]:
    """Raw samples in day-long pieces: a 30-day job's samples in one answer could pass Prometheus's
    limit on samples per query, and its memory."""
    pieces: dict[tuple, Series] = {}
    t = start
    while t < end:
        for s in prom.raw(selector, t, min(t + chunk_s, end)):
            key = tuple(sorted(s.labels.items()))
            if key in pieces:
                seen = pieces[key].samples
                seen.extend(x for x in s.samples if x[0] > seen[-1][0])
            else:
                pieces[key] = Series(s.labels, list(s.samples))
        t += chunk_s
    return list(pieces.values())


def collect(prom: Prometheus, job_id: str, cluster: str | None = None, since_s: float = 30 * 86400,
            now: float | None = None) -> JobReport:
    """Read job ``job_id`` (in ``cluster`` where ids repeat across clusters) from the last ``since_s``."""
    now = time.time() if now is None else now
    sel = f"job_id={quote(job_id)}" + (f", cluster={quote(cluster)}" if cluster is not None else "")
    info = prom.instant(f"last_over_time({JOB_INFO}{{{sel}}}[{int(since_s)}s])", now)
    if not info:
        raise ReportError(f"no job {job_id!r}{f' in cluster {cluster!r}' if cluster else ''} in {prom.url} over the "
                          f"last {since_s / 86400:g} days (--since)")
    clusters = sorted({s.labels.get("cluster", "") for s in info})
    if len(clusters) > 1:
        raise ReportError(f"job {job_id!r} exists in several clusters ({', '.join(clusters)}): "
                          "choose one with --cluster")
    cluster = clusters[0]
    sel = f"job_id={quote(job_id)}, cluster={quote(cluster)}"
    first = info[0].labels
    owner = {k: first.get(k, "") for k in OWNER if first.get(k)}
    raw = {name: raw_chunked(prom, f"{metric}{{{sel}{extra}}}", now - since_s, now)
           for name, (metric, extra) in COUNTERS.items()}
    allocated = raw["energy_j"]
    if not allocated:
        raise ReportError(f"job {job_id!r} is known but has no energy samples in {prom.url}")
    step = interval(allocated)
    truncated = min(s.samples[0][0] for s in allocated) <= now - since_s + 2 * step
    starts, ends = (raw_chunked(prom, f"{metric}{{{sel}}}", now - since_s, now) for metric in SPAN)
    start, end = _span(allocated, starts, ends, truncated)
    nodes: dict[str, NodeTotals] = {}
    restarted = 0
    for name, series in raw.items():
        for (node, _), samples in merged(series).items():
            n = nodes.setdefault(node, NodeTotals(node))
            setattr(n, name, getattr(n, name) + counter_total(samples))
            restarted += restarts(samples) if name == "energy_j" else 0
    for (node, unit), samples in merged(raw_chunked(prom, f"{JOB_WORK_UNITS_TOTAL}{{{sel}}}",
                                                    now - since_s, now)).items():
        n = nodes.setdefault(node, NodeTotals(node))
        n.work[unit or "units"] = n.work.get(unit or "units", 0.0) + counter_total(samples)
    running = any(s.samples[-1][0] >= now - 3 * step and len(s.samples) > 1 and s.samples[-1][1] > s.samples[-2][1]
                  for s in allocated)
    reason = "is still running; these are its figures so far" if running else (
        "began before the look-back (--since), which covers only part of it" if truncated else "")
    report = JobReport(job_id=job_id, cluster=cluster, scheduler=first.get("scheduler", ""), owner=owner,
                       start=start, end=end, partial=bool(reason), partial_reason=reason, source=prom.url,
                       nodes=sorted(nodes.values(), key=lambda n: n.node), gpus=[],
                       gaps=_gaps(allocated, step, start, end),
                       intensity_sources=[], fallback_share=None, pue=None, mean_utilization=None, peak_power_w=None,
                       methods=[], work={}, work_source="", version=__version__, restarts=restarted)
    for n in report.nodes:
        for unit, count in n.work.items():
            report.work[unit] = report.work.get(unit, 0.0) + count
    report.work_source = "exporter" if report.work else ""
    energy, exact = sampled_at(allocated, ends)
    grams, _ = sampled_at(raw["grams"], ends)
    node_starts = {} if truncated else _node_starts(starts)
    report.power, report.cumulative = _power_and_cumulative(energy, grams, start, end, step if exact else 4 * step,
                                                            report.gaps, node_starts)
    report.peak_power_w = max((w for _, _, w in report.power), default=None)
    _context(prom, report, sel, cluster, step, since_s, now)
    return report


def _node_starts(starts: list[Series]) -> dict[str, float]:
    """Each node's start of the job (the earliest, should an exporter have lost its state)."""
    out: dict[str, float] = {}
    for s in starts:
        node = s.labels.get("node", "")
        out[node] = min([v for _, v in s.samples] + ([out[node]] if node in out else []))
    return out


def _span(allocated: list[Series], starts: list[Series], ends: list[Series], truncated: bool) -> tuple[float, float]:
    """The job's start and end: the span its nodes' exporters counted its energy over (start of the
    first, end of the last sampling interval in which it held a GPU), so that energy ÷ duration is its
    mean power. Without those gauges (an older exporter), the first sample and the last in which its
    energy rose, each within a scrape of the truth. A job that began before the look-back starts at
    its first sample in it: the energy read covers no more."""
    first = min(s.samples[0][0] for s in allocated)
    start = first if truncated or not starts else min(_node_starts(starts).values())
    if ends:
        return start, max(v for s in ends for _, v in s.samples)
    rises = [r for r in (last_rise(s.samples) for s in allocated) if r is not None]
    return start, max(rises) if rises else max(s.samples[-1][0] for s in allocated)


def _gaps(series: list[Series], step: float, start: float, end: float) -> list[Gap]:
    """Stretches of the job without samples from a node: between two of its samples, or at the
    start or end of the job where that node's samples begin late or stop early."""
    out = []
    for (node, _), samples in merged(series).items():
        times = [t for t, _ in samples]
        edges = list(zip(times, times[1:]))
        if times and times[0] - start > 2.5 * step:
            edges.append((start, times[0]))
        if times and end - times[-1] > 2.5 * step:
            edges.append((times[-1], end))
        out += [Gap(node, a, b) for a, b in edges if b - a > 2.5 * step and a < end]
    return sorted(out, key=lambda g: g.start)


def _on_grid(samples: list[tuple[float, float]], grid: list[float]) -> list[float]:
    """A job counter's total at each grid time, in one forward pass: 0 before its first sample,
    linear between samples, restarts handled as in counter_total."""
    out, total, last_t, i = [], 0.0, None, 0
    steps = _steps(samples)
    for g in grid:
        while i < len(steps) and steps[i][0] <= g:
            total += steps[i][1]
            last_t = steps[i][0]
            i += 1
        if i < len(steps) and last_t is not None:
            t_next, step = steps[i]
            out.append(total + step * (g - last_t) / (t_next - last_t))
        else:
            out.append(total)
    return out


def _power_and_cumulative(energy: list[Series], grams: list[Series], start: float, end: float, dt: float,
                          gaps: list[Gap], node_starts: dict[str, float]
                          ) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float]]]:
    """The job's power (summed over its nodes) as bins (from, to, W) of about ``dt`` (at most 1 000),
    the last ending at the job's end, and its cumulative energy and emissions at the bins' edges.

    Each node's counters count from 0 at its start; between two samples its energy is spread evenly,
    so a bin's power is a mean of what the samples show and steps where the power steps, to within
    a bin. Power is left out where a node has a gap: the energy it used then is in the totals, spread
    over no made-up curve."""
    if end <= start:
        return [], []
    n = max(1, math.ceil((end - start) / max(dt, (end - start) / 1000) - 1e-9))
    grid = [start + (end - start) * i / n for i in range(n + 1)]

    def totals(series: list[Series]) -> list[list[float]]:
        out = []
        for (node, _), samples in merged(series).items():
            begin = node_starts.get(node)
            if begin is not None and samples and begin < samples[0][0]:
                samples = [(begin, 0.0), *samples]  # a job counter is 0 at the job's start
            out.append(_on_grid(samples, grid))
        return out

    e, g = totals(energy), totals(grams)
    cum = [(t, sum(x[i] for x in e), sum(x[i] for x in g)) for i, t in enumerate(grid)]
    power = [(a[0], b[0], (b[1] - a[1]) / (b[0] - a[0])) for a, b in zip(cum, cum[1:])
             if not any(gap.start < b[0] and a[0] < gap.end for gap in gaps)]
    return power, cum


def _capped_peak(peak: float | None, gpus: list[list[tuple[float, float]] | None]) -> float | None:
    """The job's peak (its highest mean power over a bin), never above the highest its GPUs' sampled
    power showed together: a job's power is at most its GPUs' (docs/report.md). The bins' edges are
    the exporter's sample times, but each counter is read a moment after its time is taken, and that
    moment varies (a loaded node): over a short bin it can lift a mean a little."""
    if peak is None or not gpus or any(not g for g in gpus):
        return peak
    together: dict[float, float] = defaultdict(float)
    for samples in {id(g): g for g in gpus if g}.values():  # MIG instances of one GPU: its power once
        for t, w in samples:
            together[t] += w
    return min(peak, max(together.values()))


def _gpu_key(s: Series) -> tuple[str, str, str]:
    """A GPU: (node, vendor, index); each vendor's source numbers its GPUs from 0."""
    return s.labels.get("node", ""), s.labels.get("vendor", ""), s.labels.get("gpu", "")


def _physical(by_gpu: dict[tuple[str, str, str], T], node: str, vendor: str, gpu: str) -> T | None:
    """What ``by_gpu`` holds for the physical GPU of a held GPU (a MIG instance's GPU). A held GPU without
    a vendor (exposed before jobs' GPUs carried one) is the node's GPU of that index, of any vendor."""
    physical = gpu.split(".")[0]
    if vendor:
        return by_gpu.get((node, vendor, physical))
    return next((by_gpu[k] for k in sorted(by_gpu) if (k[0], k[2]) == (node, physical)), None)


def _context(prom: Prometheus, report: JobReport, sel: str, cluster: str, step: float, since_s: float,
             now: float) -> None:
    """GPUs and their energy, power and utilisation; intensity, its sources and fallback; PUE."""
    node_re = "|".join(re.escape(n.node) for n in report.nodes if n.node) or ".*"
    held = {_gpu_key(s) for s in prom.instant(f"last_over_time({JOB_GPU_INFO}{{{sel}}}[{int(since_s)}s])", now)}
    # a range across an upgrade holds a GPU both without its vendor and with it: the GPU once
    held -= {(n, "", g) for n, v, g in held if v}
    gpu_re = "|".join(sorted({re.escape(g.split(".")[0]) for _, _, g in held})) or ".*"
    nodes_only = f"cluster={quote(cluster)}, node=~{quote(node_re)}"
    where = f"{nodes_only}, gpu=~{quote(gpu_re)}"
    window = max(int(report.end - report.start + step), int(step))
    rstep = max(step, (report.end - report.start) / 600)
    devices = {_gpu_key(s): s for s in prom.raw(f"{GPU_ENERGY_JOULES_TOTAL}{{{where}}}", report.start - 2 * step,
                                                 report.end + step)}
    report.methods = sorted({s.labels["method"] for s in devices.values() if "method" in s.labels})
    util = {_gpu_key(s): s.samples[-1][1] for s in prom.instant(
        f"avg_over_time({GPU_UTILIZATION_RATIO}{{{where}}}[{window}s])", report.end)}
    # each point the highest sample of the step before it: a burst between grid points is not thinned away
    power = {_gpu_key(s): s.samples for s in prom.range(
        f"max_over_time({GPU_POWER_WATTS}{{{where}}}[{max(int(rstep * 1000), 1)}ms])",
        report.start, report.end, rstep)}
    for node, vendor, gpu in sorted(held):
        row = GpuRow(node, gpu, vendor=vendor)
        energy, watts = _physical(devices, node, vendor, gpu), _physical(power, node, vendor, gpu)
        if energy is not None:
            row.gpu_energy_j = counter_between(energy.samples, report.start, report.end)
        row.mean_utilization = _physical(util, node, vendor, gpu)
        if watts is not None:
            report.gpu_power[f"{node}/{row.name}"] = watts
            row.peak_power_w = max(w for _, w in watts)
        report.gpus.append(row)
    report.peak_power_w = _capped_peak(report.peak_power_w, [_physical(power, *g) for g in held])
    if report.peak_power_w is not None and report.mean_power_w is not None:
        # the gauge (an averaged reading on NVML) may read a little under the counters: never below the mean
        report.peak_power_w = max(report.peak_power_w, report.mean_power_w)
    utils = [r.mean_utilization for r in report.gpus if r.mean_utilization is not None]
    report.mean_utilization = sum(utils) / len(utils) if utils else None
    for s in prom.range(f"{GRID_INTENSITY_GRAMS_PER_KWH}{{{nodes_only}}}", report.start, report.end, rstep):
        report.intensity[f"{s.labels.get('node', '')} ({s.labels.get('zone', '')})"] = s.samples
    sources: dict[tuple[str, str, str], int] = defaultdict(int)
    per_zone: dict[str, int] = defaultdict(int)  # each source's share of its own zone's time
    for s in prom.range(f"{GRID_INTENSITY_SOURCE_INFO}{{{nodes_only}}}", report.start, report.end, rstep):
        key = (s.labels.get("zone", ""), s.labels.get("source", ""), s.labels.get("signal", ""))
        sources[key] += len(s.samples)
        per_zone[key[0]] += len(s.samples)
    report.intensity_sources = [IntensitySource(z, src, sig, n / per_zone[z])
                                for (z, src, sig), n in sorted(sources.items())]
    sub = f"[{window}s:{max(int(rstep * 1000), 1)}ms]"
    share = prom.instant(f"avg_over_time(max({GRID_INTENSITY_FALLBACK}{{{nodes_only}}}){sub})", report.end)
    report.fallback_share = share[0].samples[-1][1] if share else None
    pue = prom.instant(f"avg(last_over_time({PUE_RATIO}{{{nodes_only}}}[{window}s]))", report.end)
    report.pue = pue[0].samples[-1][1] if pue else None

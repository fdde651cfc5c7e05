"""A job's report from Prometheus: its counters' raw samples, summed exactly (no extrapolation),
and the context around them (GPUs, power, utilisation, intensity, PUE, gaps)."""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from typing import Iterable

from .. import __version__
from .model import Gap, GpuRow, IntensitySource, JobReport, NodeTotals
from .prom import Prometheus, ReportError, Series

OWNER = ("user", "team", "account", "namespace", "pod")
# Node totals read from the job's counters: field -> (metric, extra matchers)
COUNTERS = {
    "energy_j": ("gpu_carbon_job_energy_joules_total", ', view="allocated"'),
    "active_j": ("gpu_carbon_job_energy_joules_total", ', view="active"'),
    "grams": ("gpu_carbon_job_emissions_grams_total", ', view="allocated"'),
    "embodied_g": ("gpu_carbon_job_embodied_emissions_grams_total", ""),
    "water_l": ("gpu_carbon_job_water_liters_total", ""),
    "gpu_seconds": ("gpu_carbon_job_gpu_seconds_total", ""),
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
    import time

    now = time.time() if now is None else now
    sel = f"job_id={quote(job_id)}" + (f", cluster={quote(cluster)}" if cluster is not None else "")
    info = prom.instant(f"last_over_time(gpu_carbon_job_info{{{sel}}}[{int(since_s)}s])", now)
    if not info:
        raise ReportError(f"no job {job_id!r}{f' in cluster {cluster!r}' if cluster else ''} in {prom.url} over the "
                          f"last {since_s / 86400:g} days (--since)")
    clusters = sorted({s.labels.get("cluster", "") for s in info})
    if len(clusters) > 1:
        raise ReportError(f"job {job_id!r} exists in several clusters ({', '.join(clusters)}): choose one with --cluster")
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
    start = min(s.samples[0][0] for s in allocated)
    rises = [r for r in (last_rise(s.samples) for s in allocated) if r is not None]
    end = max(rises) if rises else max(s.samples[-1][0] for s in allocated)
    nodes: dict[str, NodeTotals] = {}
    restarted = 0
    for name, series in raw.items():
        for (node, _), samples in merged(series).items():
            n = nodes.setdefault(node, NodeTotals(node))
            setattr(n, name, getattr(n, name) + counter_total(samples))
            restarted += restarts(samples) if name == "energy_j" else 0
    for (node, unit), samples in merged(raw_chunked(prom, f"gpu_carbon_job_work_units_total{{{sel}}}",
                                                    now - since_s, now)).items():
        n = nodes.setdefault(node, NodeTotals(node))
        n.work[unit or "units"] = n.work.get(unit or "units", 0.0) + counter_total(samples)
    running = any(s.samples[-1][0] >= now - 3 * step and len(s.samples) > 1 and s.samples[-1][1] > s.samples[-2][1]
                  for s in allocated)
    truncated = start <= now - since_s + 2 * step
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
    report.power, report.cumulative = _power_and_cumulative(allocated, raw["grams"], start, end, step, report.gaps)
    report.peak_power_w = max((w for _, w in report.power), default=None)
    _context(prom, report, sel, cluster, step, since_s, now)
    return report


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


def _power_and_cumulative(energy: list[Series], grams: list[Series], start: float, end: float, step: float,
                          gaps: list[Gap]) -> tuple[list[tuple[float, float]], list[tuple[float, float, float]]]:
    """The job's power (summed over its nodes) and its cumulative energy and emissions, on a grid
    of four scrape intervals (at most 1 000 points): a counter's value is up to one sampling
    interval older than its scrape, which over a single scrape interval would be noise. Power is
    left out where a node has a gap: the energy it used then is in the totals, spread over no
    made-up curve."""
    dt = max(4 * step, (end - start) / 1000) if end > start else step
    grid = [start + i * dt for i in range(int((end - start) / dt) + 2)]
    e = [_on_grid(samples, grid) for samples in merged(energy).values()]
    g = [_on_grid(samples, grid) for samples in merged(grams).values()]
    cum = [(t, sum(x[i] for x in e), sum(x[i] for x in g)) for i, t in enumerate(grid)]
    power = [(b[0], (b[1] - a[1]) / (b[0] - a[0])) for a, b in zip(cum, cum[1:])
             if b[0] > a[0] and not any(g.start < b[0] and a[0] < g.end for g in gaps)]
    return power, cum


def _context(prom: Prometheus, report: JobReport, sel: str, cluster: str, step: float, since_s: float,
             now: float) -> None:
    """GPUs and their energy, power and utilisation; intensity, its sources and fallback; PUE."""
    node_re = "|".join(re.escape(n.node) for n in report.nodes if n.node) or ".*"
    held = {(s.labels.get("node", ""), s.labels.get("gpu", ""))
            for s in prom.instant(f"last_over_time(gpu_carbon_job_gpu_info{{{sel}}}[{int(since_s)}s])", now)}
    gpu_re = "|".join(sorted({re.escape(g.split(".")[0]) for _, g in held})) or ".*"
    nodes_only = f"cluster={quote(cluster)}, node=~{quote(node_re)}"
    where = f"{nodes_only}, gpu=~{quote(gpu_re)}"
    window = max(int(report.end - report.start + step), int(step))
    rstep = max(step, (report.end - report.start) / 600)
    devices = {(s.labels.get("node", ""), s.labels.get("gpu", "")): s
               for s in prom.raw(f"gpu_carbon_gpu_energy_joules_total{{{where}}}", report.start - 2 * step,
                                 report.end + step)}
    report.methods = sorted({s.labels["method"] for s in devices.values() if "method" in s.labels})
    util = {(s.labels.get("node", ""), s.labels.get("gpu", "")): s.samples[-1][1] for s in prom.instant(
        f"avg_over_time(gpu_carbon_gpu_utilization_ratio{{{where}}}[{window}s])", report.end)}
    power = {(s.labels.get("node", ""), s.labels.get("gpu", "")): s.samples for s in prom.range(
        f"gpu_carbon_gpu_power_watts{{{where}}}", report.start, report.end, rstep)}
    for node, gpu in sorted(held):
        physical = gpu.split(".")[0]  # a MIG instance's GPU
        row = GpuRow(node, gpu)
        if (node, physical) in devices:
            row.gpu_energy_j = counter_between(devices[(node, physical)].samples, report.start, report.end)
        row.mean_utilization = util.get((node, physical))
        if (node, physical) in power:
            report.gpu_power[f"{node}/{gpu}"] = power[(node, physical)]
            row.peak_power_w = max(w for _, w in power[(node, physical)])
        report.gpus.append(row)
    utils = [r.mean_utilization for r in report.gpus if r.mean_utilization is not None]
    report.mean_utilization = sum(utils) / len(utils) if utils else None
    for s in prom.range(f"gpu_carbon_grid_intensity_grams_per_kwh{{{nodes_only}}}", report.start, report.end, rstep):
        report.intensity[f"{s.labels.get('node', '')} ({s.labels.get('zone', '')})"] = s.samples
    sources: dict[tuple[str, str, str], int] = defaultdict(int)
    per_zone: dict[str, int] = defaultdict(int)  # each source's share of its own zone's time
    for s in prom.range(f"gpu_carbon_grid_intensity_source_info{{{nodes_only}}}", report.start, report.end, rstep):
        key = (s.labels.get("zone", ""), s.labels.get("source", ""), s.labels.get("signal", ""))
        sources[key] += len(s.samples)
        per_zone[key[0]] += len(s.samples)
    report.intensity_sources = [IntensitySource(z, src, sig, n / per_zone[z])
                                for (z, src, sig), n in sorted(sources.items())]
    sub = f"[{window}s:{max(int(rstep * 1000), 1)}ms]"
    share = prom.instant(f"avg_over_time(max(gpu_carbon_grid_intensity_fallback{{{nodes_only}}}){sub})", report.end)
    report.fallback_share = share[0].samples[-1][1] if share else None
    pue = prom.instant(f"avg(last_over_time(gpu_carbon_pue_ratio{{{nodes_only}}}[{window}s]))", report.end)
    report.pue = pue[0].samples[-1][1] if pue else None

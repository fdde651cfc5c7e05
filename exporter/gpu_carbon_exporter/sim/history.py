"""A scenario's history as OpenMetrics with timestamps, for backfilling a Prometheus
(`promtool tsdb create-blocks-from openmetrics`; docs/rules.md#backfilling).

The counters are the ground truth's (`GroundTruth`), sampled every ``step_s`` from the
scenario's t = 0, with the label sets the exporter exposes plus the target labels a scrape
would add. Job series exist from the job's start until ``linger_s`` after its end, as the
exporter exposes them.
"""
from __future__ import annotations

import math
from typing import Iterator

from .scenario import GroundTruth, Scenario, SimJob


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}"


def _times(step_s: float, t0: float, t1: float) -> Iterator[float]:
    k = math.ceil(t0 / step_s)
    while k * step_s <= t1:
        yield k * step_s
        k += 1


def _counter(name: str, labels: str, points: Iterator[tuple[float, float]], epoch: float) -> list[str]:
    return [f"{name}{labels} {value!r} {epoch + t:.3f}" for t, value in points]


def _cumulative(fn, times: list[float], start: float) -> Iterator[tuple[float, float]]:
    """(t, fn(start, t)) for each t, summed step by step."""
    total, prev = 0.0, start
    for t in times:
        total += fn(prev, t)
        prev = t
        yield t, total


def _job_lines(truth: GroundTruth, job: SimJob, step_s: float, end_s: float, linger_s: float,
               target: dict[str, str], epoch: float) -> dict[str, list[str]]:
    times = list(_times(step_s, job.start_s, min(job.end_s + linger_s, end_s)))
    key = {**target, "job_id": job.id, "scheduler": "slurm"}
    view = _labels(**key, view="allocated")
    info = _labels(**key, user=job.user, team=job.team, account="", namespace="", pod="")
    return {
        "gpu_carbon_job_energy_joules": _counter(
            "gpu_carbon_job_energy_joules_total", view,
            _cumulative(lambda a, b: truth.job_allocated_j(job, a, b), times, job.start_s), epoch),
        "gpu_carbon_job_emissions_grams": _counter(
            "gpu_carbon_job_emissions_grams_total", view,
            _cumulative(lambda a, b: truth.job_allocated_g(job, a, b), times, job.start_s), epoch),
        "gpu_carbon_job_info": [f"gpu_carbon_job_info{info} 1 {epoch + t:.3f}" for t in times],
    }


def render_history(scenario: Scenario, epoch: float, end_s: float, step_s: float = 300.0,
                   target: dict[str, str] | None = None, linger_s: float = 300.0) -> str:
    """OpenMetrics text of ``scenario`` over [0, end_s] seconds, t = 0 at unix time ``epoch``."""
    truth, target = GroundTruth(scenario), target or {}
    families: dict[str, list[str]] = {"gpu_carbon_gpu_energy_joules": [], "gpu_carbon_gpu_emissions_grams": [],
                                      "gpu_carbon_job_energy_joules": [], "gpu_carbon_job_emissions_grams": [],
                                      "gpu_carbon_job_info": []}
    times = list(_times(step_s, 0.0, end_s))
    for d in scenario.devices:
        gpu = _labels(**target, gpu=str(d.index), uuid=d.uuid)
        families["gpu_carbon_gpu_energy_joules"] += _counter(
            "gpu_carbon_gpu_energy_joules_total", gpu[:-1] + ',method="counter"}',
            _cumulative(lambda a, b, i=d.index: truth.device_energy_j(i, a, b), times, 0.0), epoch)
        families["gpu_carbon_gpu_emissions_grams"] += _counter(
            "gpu_carbon_gpu_emissions_grams_total", gpu,
            _cumulative(lambda a, b, i=d.index: truth.device_emissions_g(i, a, b), times, 0.0), epoch)
    for job in scenario.jobs:
        for name, lines in _job_lines(truth, job, step_s, end_s, linger_s, target, epoch).items():
            families[name] += lines
    out = []
    for name, lines in families.items():
        out.append(f"# TYPE {name} {'gauge' if name.endswith('_info') else 'counter'}")
        out += lines
    return "\n".join(out) + "\n# EOF\n"

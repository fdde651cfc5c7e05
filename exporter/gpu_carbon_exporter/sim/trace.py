"""Exports a scenario as a trace for the C NVML simulator (tests/nvml_sim/).

The trace carries each device's pattern in prefix notation (``Pattern.spec``),
so the C library evaluates the same closed forms as the Python simulator and
both agree with ``GroundTruth``.
"""
from __future__ import annotations

import math
from pathlib import Path

from .scenario import Scenario

FORMAT = "nvml_sim trace v1"


def job_processes(scenario: Scenario) -> list[tuple[int, int, float, float, float, int | None]]:
    """(device index, pid, start_s, end_s, share, GPU instance id) for every job process: one per job and device."""
    out = []
    for j, job in enumerate(scenario.jobs):
        if job.repeat_s is not None:
            raise ValueError("the C simulator's trace has no cyclic jobs (cycle_s): give jobs without a cycle")
        gi = None if job.mig_instance is None else job.mig_instance + 1
        for k, dev in enumerate(job.devices):
            out.append((dev, job_pid(j, k), job.start_s, job.end_s, job.share, gi))
    return out


def job_pid(job_index: int, device_position: int) -> int:
    return 200_000 + 100 * job_index + device_position


def render_trace(scenario: Scenario, epoch: float) -> str:
    if any(d.model.vendor != "nvidia" for d in scenario.devices):
        raise ValueError("the C simulator's trace has only NVIDIA GPUs: give a scenario without other vendors'")
    lines = [f"# {FORMAT}", f"epoch {epoch!r}"]
    for d in scenario.devices:
        m = d.model
        lines.append(f"device {d.index} {d.uuid} {int(m.energy_counter)} "
                     f"{0 if m.power_usage == 'average_1s' else 1} {m.idle_w!r} {m.max_w!r} {m.memory_bytes} "
                     f"{m.max_sm_mhz} {d.energy_offset_mj} {d.mig_instances} {m.name}")
        lines.append(f"pattern {d.index} {' '.join(d.pattern.spec())}")
    for dev, pid, start, end, share, gi in job_processes(scenario):
        lines.append(f"proc {dev} {pid} {start!r} {end if math.isfinite(end) else 1e300!r} {share!r} "
                     f"{-1 if gi is None else gi}")
    return "\n".join(lines) + "\n"


def write_trace(scenario: Scenario, epoch: float, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render_trace(scenario, epoch))
    return path

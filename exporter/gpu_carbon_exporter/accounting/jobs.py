"""Job accounting: one GPU's accounting step split among the jobs holding it, and the jobs' water.

Conservation holds at every step, for energy and emissions, in both views:
Σ jobs (allocated) + unallocated = Σ jobs (active) + idle + unattributed = the GPU's energy.
Who holds each GPU is the attribution engine's to know; it passes its holders in.
"""
from __future__ import annotations

from ..snapshot import AttributionSnapshot, GpuBuckets, JobCounters
from ..sources.base import JOULES_PER_KWH
from .split import Holder, split

# One GPU's holders: (share of the GPU, slot name, holders) per part (the whole GPU, or each MIG instance).
Slots = list[tuple[float, str, list[Holder]]]


def account_step(jobs: dict[str, JobCounters], b: GpuBuckets, slots: Slots, *, idle_w: float,
                 embodied_g_per_s: float, joules: float, grams: float, t0: float, t1: float,
                 held_s: float | None) -> None:
    """Split ``joules`` (and ``grams``) used over [t0, t1] among the GPU's holders; never negative.

    ``slots``: at least one (a GPU no job holds has one slot without holders). ``held_s``: seconds
    of GPU time held for embodied carbon (the sampled, monotonic duration; 0 for energy recovered
    over the exporter's downtime)."""
    sampled = held_s is None or held_s > 0  # not energy recovered over the exporter's downtime
    for _, _, holders in slots:
        for h in holders:  # a job that expired while it still held the GPU comes back
            jc = jobs.setdefault(h.job.key, JobCounters(h.job))
            if sampled:  # its start and end: times it was seen holding the GPU, never a downtime's end
                jc.held_from = t0 if jc.held_from is None else min(jc.held_from, t0)
                jc.held_until = t1 if jc.held_until is None else max(jc.held_until, t1)
    idle_total = idle_w * max(t1 - t0, 0.0)
    g_per_j = grams / joules if joules > 0 else 0.0
    # Parts of one GPU: MIG instances by SM share, the last taking the remainder.
    energy_parts = [joules * w for w, _, _ in slots[:-1]]
    energy_parts.append(max(joules - sum(energy_parts), 0.0))
    for (w, _, holders), e in zip(slots, energy_parts):
        held = max(t1 - t0 if held_s is None else held_s, 0.0) * w
        _add_held(jobs, b, holders, held, embodied_g_per_s * held)
        s = split(e, idle_total * w, holders)
        b.method = s.method if len(slots) == 1 else "mig"
        b.unallocated_j += s.unallocated
        b.unallocated_g += s.unallocated * g_per_j
        b.idle_j += s.idle
        b.idle_g += s.idle * g_per_j
        b.unattributed_j += s.unattributed
        b.unattributed_g += s.unattributed * g_per_j
        for key, part in s.allocated.items():
            jc = jobs[key]
            jc.energy_allocated_j += part
            jc.emissions_allocated_g += part * g_per_j
        for key, part in s.active.items():
            jc = jobs[key]
            jc.energy_active_j += part
            jc.emissions_active_g += part * g_per_j


def _add_held(jobs: dict[str, JobCounters], b: GpuBuckets, holders: list[Holder], held: float,
              embodied: float) -> None:
    """GPU time held and its embodied carbon: shared equally among the holders, like idle."""
    if holders:
        for h in holders:
            jobs[h.job.key].embodied_g += embodied / len(holders)
            jobs[h.job.key].gpu_seconds += held / len(holders)
    else:
        b.unallocated_embodied_g += embodied


def add_water(att: AttributionSnapshot, wue_liters_per_kwh: float | None) -> None:
    """Set the water of each job's allocated energy at the configured WUE (L) on a snapshot's own
    copies of the job counters (``Attribution.snapshot`` makes fresh ones)."""
    if wue_liters_per_kwh is None:
        return
    for jc in att.jobs:
        jc.water_l = jc.energy_allocated_j / JOULES_PER_KWH * wue_liters_per_kwh

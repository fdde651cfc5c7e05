"""Splitting one GPU's energy over one sample among the jobs holding it.

Two views, both conserving the GPU's energy exactly at every sample:
- allocated: each job pays its share of the active energy plus an equal share of the
  idle energy; with no job holding the GPU, everything goes to ``unallocated``.
- active: each job gets its share of the active energy only; idle energy is reported
  separately, and active energy with no job (an unmapped process) is ``unattributed``.
Active energy is shared by per-process SM utilisation, else by GPU memory, else equally.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..snapshot import Job


class Holder(Protocol):
    """A job holding (part of) a GPU during one sample (``attribution.model.Holder``): what splitting reads."""

    job: Job
    sm_util: float | None  # summed per-process SM utilisation, percent
    memory_bytes: int | None  # summed per-process GPU memory


@dataclass
class Split:
    method: str  # exclusive, sm, memory, equal, none
    allocated: dict[str, float] = field(default_factory=dict)  # job key -> J
    active: dict[str, float] = field(default_factory=dict)  # job key -> J
    unallocated: float = 0.0  # allocated view: energy of a GPU no job holds
    idle: float = 0.0  # active view: idle energy
    unattributed: float = 0.0  # active view: active energy with no job


def weights(holders: list[Holder]) -> tuple[str, list[float]]:
    """(method, weights summing to 1) for sharing active energy among ``holders``."""
    if len(holders) == 1:
        return "exclusive", [1.0]
    for method, values in (("sm", [h.sm_util for h in holders]), ("memory", [h.memory_bytes for h in holders])):
        if all(v is not None for v in values) and sum(values) > 0:
            total = float(sum(values))
            return method, [v / total for v in values]
    return "equal", [1.0 / len(holders)] * len(holders)


def _shares(total: float, fractions: list[float]) -> list[float]:
    """``total`` cut by ``fractions``; the last part takes the remainder so the parts sum to ``total``.

    The remainder is clamped at 0: rounding must never make a counter go down (the parts then
    exceed ``total`` by at most a few ulps)."""
    parts = [total * f for f in fractions[:-1]]
    return parts + [max(total - sum(parts), 0.0)]


def split(energy_j: float, idle_j: float, holders: list[Holder]) -> Split:
    """Split ``energy_j`` used over one sample, of which ``idle_j`` is idle power x time."""
    idle = min(max(idle_j, 0.0), energy_j)
    active = energy_j - idle
    if not holders:
        return Split("none", unallocated=energy_j, idle=idle, unattributed=active)
    method, w = weights(holders)
    keys = [h.job.key for h in holders]
    active_parts = _shares(active, w)
    idle_parts = _shares(idle, [1.0 / len(holders)] * len(holders))
    out = Split(method, idle=idle)
    for key, a, i in zip(keys, active_parts, idle_parts):
        out.active[key] = out.active.get(key, 0.0) + a
        out.allocated[key] = out.allocated.get(key, 0.0) + a + i
    return out

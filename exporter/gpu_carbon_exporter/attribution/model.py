"""Jobs and the processes that hold GPUs."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..snapshot import Job

__all__ = ["Holder", "Job"]  # a job's identity is part of the snapshot model (snapshot.py)


@dataclass
class Holder:
    """A job holding (part of) a GPU during one sample, with its usage signals."""

    job: Job
    pids: set[int] = field(default_factory=set)
    sm_util: float | None = None  # summed per-process SM utilisation, percent
    memory_bytes: int | None = None  # summed per-process GPU memory

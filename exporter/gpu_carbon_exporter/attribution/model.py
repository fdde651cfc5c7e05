"""Jobs and the processes that hold GPUs."""
from __future__ import annotations

from dataclasses import dataclass, field


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
class Holder:
    """A job holding (part of) a GPU during one sample, with its usage signals."""

    job: Job
    pids: set[int] = field(default_factory=set)
    sm_util: float | None = None  # summed per-process SM utilisation, percent
    memory_bytes: int | None = None  # summed per-process GPU memory

"""A fake /proc for the simulated fleet: each job process gets a Slurm cgroup v2 path and environment."""
from __future__ import annotations

import tempfile
from pathlib import Path

from .scenario import Scenario
from .trace import job_pid


def write_procfs(scenario: Scenario, root: str | Path | None = None) -> str:
    """Lay out ``<root>/<pid>/{cgroup,environ,status}`` for every job process; returns the root."""
    root = Path(root or tempfile.mkdtemp(prefix="gpu-carbon-proc-"))
    for j, job in enumerate(scenario.jobs):
        uid = 1000 + sum(job.user.encode()) % 5000
        for k, _ in enumerate(job.devices):
            d = root / str(job_pid(j, k))
            d.mkdir(parents=True, exist_ok=True)
            (d / "cgroup").write_text(f"0::/system.slice/slurmstepd.scope/job_{job.id}/step_0/user/task_0\n")
            env = {"SLURM_JOB_ID": job.id, "SLURM_JOB_USER": job.user, "SLURM_JOB_ACCOUNT": job.team}
            (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()) + b"\0")
            (d / "status").write_text(f"Name:\tpython\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    return str(root)

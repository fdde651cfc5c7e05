"""The DRM client usage stats of the jobs on simulated AMD cards: ``/proc/PID/fdinfo``, as amdgpu
prints it (``amdgpu_fdinfo.c``), with exact truth.

Each job process on a card has the card's render node open twice (fd 9, and fd 10 dup'ed from it:
one client), beside the Intel simulator's fds 7 and 8 in the same /proc (``sim/intel.py``), so a
mixed node's job may hold cards of both vendors. A client keeps the ``gfx`` engine busy at
``share`` / (the sum of the shares of the card's jobs, at least 1) while its job runs, and ``dma``
at a tenth of that; amdgpu prints an engine only once it has been busy. Memory: ``drm-memory-vram``
(the older key) and ``drm-resident-vram`` in KiB. A job's every run (cycle) is a new process and a
new client, counting from 0. ``client_busy_s`` is a client's gfx engine-seconds in closed form.

On a card in a compute partition mode (``render_nodes``: a card's render nodes, one per partition)
the n-th of the card's jobs (in scenario order) opens partition n mod the partitions' number, as a
scheduler placing one job per partition would. Only partition 0's node is the card's PCI device: a
client of another partition (``amdgpu_xcp.N``, a platform device) prints no ``drm-pdev``, as the
DRM core prints it for PCI devices only; its engine time is the same truth.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .scenario import Scenario, SimDevice, SimJob
from .trace import job_pid

FD_DRM, FD_DUP = 9, 10
DMA_SHARE = 0.1  # of a client's gfx busy, on the dma engine


def _write(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(value)
    os.replace(tmp, path)  # a reader never sees a half-written file


class AmdgpuClients:
    """The fdinfo of the jobs on ``cards`` (the scenario's AMD devices, in the order of the amdgpu
    simulator, whose PCI addresses ``pci`` holds) under ``proc_root`` (``sim/procfs.py``'s)."""

    def __init__(self, scenario: Scenario, cards: list[SimDevice], pci: list[str], proc_root: str | Path,
                 render_nodes: list[list[str]] | None = None) -> None:
        self.sc, self.cards, self.pci, self.proc = scenario, cards, pci, Path(proc_root)
        self.render_nodes = render_nodes or [[f"renderD{128 + k}"] for k in range(len(cards))]

    def partition(self, j: int, d: SimDevice) -> int:
        """The compute partition of card ``d`` whose render node job ``j``'s process opens."""
        on_card = [i for i, job in enumerate(self.sc.jobs) if d.index in job.devices]
        return on_card.index(j) % len(self.render_nodes[self.cards.index(d)])

    @staticmethod
    def _run(job: SimJob, t: float) -> tuple[int, float]:
        """(number, start) of the job's run (its cycle) at ``t``."""
        k = math.floor(t / job.repeat_s) if job.repeat_s else 0
        return k, (k * job.repeat_s if job.repeat_s else 0.0) + job.start_s

    def rate(self, job: SimJob, d: SimDevice) -> float:
        """The fraction of the card's gfx engine the job keeps busy while it runs."""
        return job.share / max(sum(x.share for x in self.sc.jobs if d.index in x.devices), 1.0)

    def client_busy_s(self, job: SimJob, d: SimDevice, t: float) -> float:
        """gfx engine-seconds of the job's client on ``d`` at ``t``, since its current run began."""
        return self.rate(job, d) * (t - self._run(job, t)[1]) if job.active(t) else 0.0

    def _fdinfo(self, j: int, job: SimJob, pos: int, k: int, t: float) -> str:
        d = self.sc.devices[job.devices[pos]]
        card = self.cards.index(d)
        busy = self.client_busy_s(job, d, t)
        vram_kib = int(d.model.memory_bytes * 0.6 * self.rate(job, d)) // 1024
        pdev = [f"drm-pdev:\t{self.pci[card]}"] if self.partition(j, d) == 0 else []  # a PCI device's node only
        lines = ["pos:\t0", "flags:\t02100002", "mnt_id:\t26", f"ino:\t{2000 + j}", "drm-driver:\tamdgpu",
                 f"drm-client-id:\t{(k * len(self.sc.jobs) + j) * 64 + pos + 1}", *pdev,
                 f"pasid:\t{32768 + j * 8 + pos}", f"drm-memory-vram:\t{vram_kib} KiB", "drm-memory-gtt:\t2048 KiB",
                 "drm-memory-cpu:\t0 KiB", f"drm-resident-vram:\t{vram_kib} KiB", "amd-evicted-vram:\t0 KiB"]
        for engine, seconds in (("gfx", busy), ("dma", busy * DMA_SHARE)):
            ns = math.floor(seconds * 1e9)
            if ns:  # amdgpu prints an engine only once it has been busy
                lines.append(f"drm-engine-{engine}:\t{ns} ns")
        return "\n".join(lines)

    def _processes(self, t: float) -> dict[int, list[tuple[int, str, str]]]:
        """pid -> [(fd, device node, fdinfo)] of every job process on an AMD card now."""
        out: dict[int, list[tuple[int, str, str]]] = {}
        for j, job in enumerate(self.sc.jobs):
            if not job.active(t):
                continue
            for pos, index in enumerate(job.devices):
                d = self.sc.devices[index]
                if d not in self.cards:
                    continue
                text = self._fdinfo(j, job, pos, self._run(job, t)[0], t)
                node = f"/dev/dri/{self.render_nodes[self.cards.index(d)][self.partition(j, d)]}"
                out.setdefault(job_pid(j, pos), []).extend([(FD_DRM, node, text), (FD_DUP, node, text)])
        return out

    def update(self, t: float) -> None:
        """The DRM files of the processes on the cards at ``t``; those of processes off them closed."""
        now = self._processes(t)
        for pid_dir in self.proc.iterdir():
            if pid_dir.name.isdigit() and int(pid_dir.name) not in now:
                for fd in (FD_DRM, FD_DUP):
                    (pid_dir / "fd" / str(fd)).unlink(missing_ok=True)
                    (pid_dir / "fdinfo" / str(fd)).unlink(missing_ok=True)
        for pid, files in now.items():
            base = self.proc / str(pid)
            (base / "fd").mkdir(parents=True, exist_ok=True)
            for fd, node, text in files:
                _write(base / "fdinfo" / str(fd), text)
                if not (base / "fd" / str(fd)).is_symlink():
                    os.symlink(node, base / "fd" / str(fd))

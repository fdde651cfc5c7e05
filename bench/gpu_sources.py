"""CPU cost of the AMD and Intel GPU sources and of the DRM client (fdinfo) reader.

- Idle CPU per GPU: one sample of every card of the built-in ``mi300x`` scenario (8 AMD cards,
  the simulator's amdgpu tree) and of ``intel-max`` (4 Intel cards, xe hwmon), read by the
  production sources with processes on, over a /proc without GPU processes; in process CPU time
  per card per sample, and as a share of a core at 1 Hz.
- Per process scanned: the reader lists every process's open files once per sample. Over a fake
  /proc of ``--processes`` processes without a GPU (stdin, a socket, a log file each) and over the
  same with each holding an amdgpu render node (fdinfo parsed, one client each); and over this
  host's own /proc, whatever it runs (needs root to see every process's files).

The sysfs and /proc trees are on /tmp: on a real node a ``gpu_metrics`` read also makes the
driver fetch the firmware's table, and a fdinfo read walks the client's state, in kernel time
these figures do not include.

Usage: python bench/gpu_sources.py [--samples 200] [--processes 500]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from gpu_carbon_exporter.attribution.fdinfo import DrmClientScanner
from gpu_carbon_exporter.sim.amdgpu import AmdgpuSimulator
from gpu_carbon_exporter.sim.intel import IntelGpuSimulator
from gpu_carbon_exporter.sim.scenario import load_scenario
from gpu_carbon_exporter.sources.amdgpu import AmdgpuSource
from gpu_carbon_exporter.sources.intel_gpu import IntelGpuSource

AMDGPU_FDINFO = ("pos:\t0\nflags:\t02100002\nmnt_id:\t26\nino:\t{pid}\ndrm-driver:\tamdgpu\n"
                 "drm-client-id:\t{pid}\ndrm-pdev:\t0000:11:00.0\npasid:\t{pid}\ndrm-memory-vram:\t4096 KiB\n"
                 "drm-memory-gtt:\t2048 KiB\ndrm-memory-cpu:\t0 KiB\ndrm-resident-vram:\t4096 KiB\n"
                 "amd-evicted-vram:\t0 KiB\ndrm-engine-gfx:\t{ns} ns\ndrm-engine-dma:\t{dma} ns\n")


def skip_counter_check(seconds: float) -> None:
    """The simulated tree is not kept current here, so its accumulators stand still: the source's
    start-up check of them (0.5 s against the power gauge) is left undecided, and they are read."""


def per_call(calls: int, run: Callable[[], None]) -> float:
    """Process CPU seconds of one ``run()``, averaged over ``calls``."""
    start = time.process_time()
    for _ in range(calls):
        run()
    return (time.process_time() - start) / calls


def fake_proc(root: Path, processes: int, drm: bool) -> None:
    for pid in range(1000, 1000 + processes):
        fd, info = root / str(pid) / "fd", root / str(pid) / "fdinfo"
        fd.mkdir(parents=True)
        info.mkdir()
        for n, target in ((0, "/dev/null"), (3, f"socket:[{pid}]"), (4, f"/var/log/job-{pid}.log")):
            os.symlink(target, fd / str(n))
            (info / str(n)).write_text(f"pos:\t0\nflags:\t02\nmnt_id:\t{24 + n}\nino:\t{pid}\n")
        if drm:
            os.symlink("/dev/dri/renderD128", fd / "7")
            (info / "7").write_text(AMDGPU_FDINFO.format(pid=pid, ns=pid * 10**6, dma=pid * 10**5))


def sources(samples: int, tmp: Path) -> None:
    empty = tmp / "proc-empty"
    empty.mkdir()
    amd_root, intel_root = tmp / "amd", tmp / "intel"
    AmdgpuSimulator(amd_root, load_scenario("mi300x").devices)
    intel = load_scenario("intel-max")
    IntelGpuSimulator(intel, intel_root, empty).update(0.0)
    amd = AmdgpuSource(amd_root, sleep=skip_counter_check, clients=DrmClientScanner(empty, amd_root),
                       read_processes=True)
    xe = IntelGpuSource(intel_root, clients=DrmClientScanner(empty, intel_root), read_processes=True)
    print("| source | cards | CPU per card per sample | at 1 Hz |\n|---|---|---|---|")
    for name, source in (("amdgpu (mi300x)", amd), ("intel_gpu (intel-max)", xe)):
        cards = source.open()
        cost = per_call(samples, lambda: [source.read(c, slow=False) for c in cards]) / len(cards)
        print(f"| {name} | {len(cards)} | {cost * 1e6:.0f} µs | {cost * 100:.3f} % of a core per card |")


def scans(samples: int, processes: int, tmp: Path) -> None:
    print("\n| /proc scanned | processes | CPU per scan | per process |\n|---|---|---|---|")
    for name, drm in (("without GPU files", False), ("each with an amdgpu client", True)):
        root = tmp / f"proc-{int(drm)}"
        fake_proc(root, processes, drm)
        scanner = DrmClientScanner(root, tmp)
        cost = per_call(samples, scanner.scan)
        print(f"| fake, {name} | {processes} | {cost * 1e3:.2f} ms | {cost / processes * 1e6:.1f} µs |")
    host = len([p for p in os.listdir("/proc") if p.isdigit()])
    cost = per_call(max(samples // 4, 1), DrmClientScanner("/proc").scan)
    print(f"| this host's /proc | {host} | {cost * 1e3:.2f} ms | {cost / host * 1e6:.1f} µs |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="samples to time (default 200)")
    parser.add_argument("--processes", type=int, default=500, help="processes in the fake /proc (default 500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-sources-") as tmp:
        sources(args.samples, Path(tmp))
        scans(args.samples, args.processes, Path(tmp))


if __name__ == "__main__":
    main()

"""What crash-safe counters cost: bytes written to storage and CPU per sample.

The production meter samples a simulated 8-GPU node with 8 jobs once a second for
``--seconds`` of real time, with ``state.path`` on the given directory, in two modes:

- ``checkpoint``: the shipped design (a crash checkpoint rewritten in place after every
  sample without fsync, a durable fsync'd write every ``persist_interval``);
- ``fsync-every-sample``: the naive alternative (a durable write after every sample).

Storage bytes are the process's ``write_bytes`` from /proc/self/io: pages the process
dirtied and the kernel had to write out. Rewriting a page that is still dirty costs
nothing more, which is why in-place checkpoints reach the flash at the kernel's
writeback cadence (``vm.dirty_expire_centisecs``, 30 s by default), not once per sample.

Usage: python bench/state_io.py [--seconds 60] [--dir /var/tmp]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import ManualClock, sim_nvml

from gpu_carbon_exporter.attribution.engine import Attribution
from gpu_carbon_exporter.attribution.model import Holder, Job
from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sources.nvml import NvmlSource
from gpu_carbon_exporter.state import StateStore


class OneJobPerGpu:
    name = "bench"

    def refresh(self) -> None:
        pass

    def holders(self, device, mig, procs):
        return [Holder(Job(f"job-{device.index}", "slurm", team="bench"))]


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def run(mode: str, seconds: int, directory: str) -> tuple[float, float]:
    """(KiB written to storage per hour, ms of state writing per sample)."""
    clock = ManualClock()
    nv = sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": 8,
                                "power": {"pattern": "constant", "watts": 400}}]}, clock)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        store = StateStore(Path(tmp) / "state.json")
        meter = Meter([NvmlSource(nv)], StaticIntensity("Z", 300), clock=clock, state=store,
                      attribution=Attribution([OneJobPerGpu()]),
                      persist_interval_seconds=1.0 if mode == "fsync-every-sample" else 60.0)
        meter.open()
        meter.sample()
        spent = 0.0
        start = write_bytes()
        for _ in range(seconds):
            time.sleep(1.0)
            clock.advance(1.0)
            t = time.perf_counter()
            meter.sample()
            spent += time.perf_counter() - t
        written = write_bytes() - start
        meter.stop()
    return written / 1024 * 3600 / seconds, 1000 * spent / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--dir", default="/var/tmp", help="a directory on the storage to measure")
    args = ap.parse_args()
    print(f"{'mode':<20} {'KiB/hour to storage':>20} {'ms per sample (all)':>20}")
    for mode in ("checkpoint", "fsync-every-sample"):
        kib, ms = run(mode, args.seconds, args.dir)
        print(f"{mode:<20} {kib:>20.0f} {ms:>20.2f}")


if __name__ == "__main__":
    main()

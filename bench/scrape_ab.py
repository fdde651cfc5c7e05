"""Scrape latency of several versions of the exporter side by side: A/B for a change to the scrape path.

Each source tree (a checkout or a git worktree, e.g. ``git worktree add /tmp/old HEAD~1``) runs its
exporter over the same simulated NVML library (tests/nvml_sim), with a state file as deployed; the
bench then scrapes them in alternating rounds of 50 keep-alive scrapes with Prometheus 3's own
Accept and Accept-Encoding headers, so that whatever else loads the machine loads every tree alike.
It prints each tree's median and first-quartile latency.

Usage: python bench/scrape_ab.py [--gpus 8] [--procs-per-gpu 2] [--rounds 30] TREE [TREE ...]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, sim_env, wait_http
from overhead import Scraper, scenario

from gpu_carbon_exporter.sim.scenario import parse_scenario
from gpu_carbon_exporter.sim.trace import write_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", type=Path, help="source trees (each with exporter/gpu_carbon_exporter)")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--procs-per-gpu", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scrape-ab-"))
    trace = write_trace(parse_scenario(scenario(args.gpus, args.gpus * args.procs_per_gpu)), time.time(),
                        tmp / "trace.txt")
    procs, ports = [], []
    try:
        for i, tree in enumerate(args.trees):
            port = free_port()
            config = tmp / f"config-{i}.yml"
            config.write_text(f"state:\n  path: {tmp / f'state-{i}.json'}\n")
            env = {**sim_env(trace), "PYTHONPATH": str(tree.resolve() / "exporter")}
            procs.append(subprocess.Popen([sys.executable, "-m", "gpu_carbon_exporter", "--config", str(config),
                                           "--web.listen-address", f"127.0.0.1:{port}"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=open(tmp / f"log-{i}", "w")))
            ports.append(port)
        for port, proc in zip(ports, procs):
            wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60.0, proc=proc)
        lat: dict[int, list[float]] = {i: [] for i in range(len(ports))}
        for _ in range(args.rounds):
            for i, port in enumerate(ports):
                scraper = Scraper(port)
                scraper.get()  # the connection's first request, not timed
                for _ in range(50):
                    start = time.perf_counter()
                    scraper.get()
                    lat[i].append(time.perf_counter() - start)
        for i, tree in enumerate(args.trees):
            q1 = statistics.quantiles(lat[i], n=4)[0]
            print(f"{tree}: p50 {1e3 * statistics.median(lat[i]):.3f} ms, p25 {1e3 * q1:.3f} ms "
                  f"({len(lat[i])} scrapes)")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)


if __name__ == "__main__":
    main()

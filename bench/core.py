"""Core overhead benchmark: scrape latency, CPU, RSS and NVML calls for 8 and 64 simulated GPUs.

Runs the production stack in a subprocess over the simulated NVML library
(constant power, 1-s sampling), scrapes it with Prometheus 3's own Accept and
Accept-Encoding headers (OpenMetrics, gzip) and prints a Markdown table.
Usage: python bench/core.py [--gpus 8 64] [--idle-seconds 30] [--scrapes 300]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import PROMETHEUS_HEADERS  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def calls(proc: subprocess.Popen, path: Path) -> tuple[float, int]:
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    data = json.loads(path.read_text())
    return data["time"], data["calls"]


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def measure(n: int, idle_s: float, scrapes: int) -> dict:
    port, tmp = free_port(), Path(tempfile.mkdtemp())
    counts = tmp / "calls.json"
    proc = subprocess.Popen([sys.executable, str(HERE / "_sim_exporter.py"), str(n), str(port), str(counts)])
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for _ in range(100):
            try:
                requests.get(url, timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        ps = psutil.Process(proc.pid)
        time.sleep(3)  # warm up
        c0, t0 = cpu_seconds(ps), time.monotonic()
        tc0, n0 = calls(proc, counts)
        time.sleep(idle_s)
        tc1, n1 = calls(proc, counts)
        idle_cpu = (cpu_seconds(ps) - c0) / (time.monotonic() - t0)
        session = requests.Session()
        session.headers.update(PROMETHEUS_HEADERS)
        lat = []
        c1, t1 = cpu_seconds(ps), time.monotonic()
        for _ in range(scrapes):
            s = time.perf_counter()
            r = session.get(url, timeout=5)
            lat.append(time.perf_counter() - s)
            assert r.status_code == 200
        busy = cpu_seconds(ps) - c1 - idle_cpu * (time.monotonic() - t1)
        rss = ps.memory_info().rss
        lat.sort()
        return {"gpus": n, "p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * lat[int(0.99 * len(lat)) - 1],
                "idle_cpu_pct": 100 * idle_cpu, "cpu_per_scrape_ms": 1e3 * busy / scrapes,
                "rss_mb": rss / 1e6, "nvml_calls_per_s": (n1 - n0) / (tc1 - tc0),
                "series": r.text.count("\n") - r.text.count("#")}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--scrapes", type=int, default=300)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, 1-s sampling, "
          f"{args.scrapes} sequential scrapes, {args.idle_seconds:.0f} s idle window\n")
    print("| GPUs | series | scrape p50 | scrape p99 | idle CPU (% of a core) | CPU per scrape | RSS | NVML calls/s |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.gpus:
        m = measure(n, args.idle_seconds, args.scrapes)
        print(f"| {n} | {m['series']} | {m['p50_ms']:.2f} ms | {m['p99_ms']:.2f} ms | {m['idle_cpu_pct']:.2f} % | "
              f"{m['cpu_per_scrape_ms']:.2f} ms | {m['rss_mb']:.1f} MB | {m['nvml_calls_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()

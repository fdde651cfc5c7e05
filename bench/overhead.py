"""Overhead benchmark: ours vs nvitop-exporter on the same simulated NVML library, side by side.

For 8 and 64 simulated H100s, with 0 and 200 GPU processes, each exporter runs
alone over tests/nvml_sim's libnvidia-ml.so.1 (our production code through the
real pynvml; nvitop-exporter 1.7.2 unmodified, --interval 1.0), scraped with
Prometheus 3's own Accept and Accept-Encoding headers. Measured:
scrape latency (300 back-to-back scrapes), CPU seconds per hour and NVML calls
per scrape while scraped once a second (as Prometheus would), and RSS.

Usage: python bench/overhead.py [--gpus 8 64] [--procs-per-gpu 0 2] [--paced-seconds 30]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from common import free_port, nvitop_cmd, ours_cmd, process, scrape_session, sim_env

from gpu_carbon_exporter.sim.scenario import parse_scenario
from gpu_carbon_exporter.sim.trace import write_trace


def scenario(gpus: int, procs: int) -> dict:
    jobs = [{"id": f"j{k}", "devices": [k % gpus], "share": 1.0 / max(1, procs // gpus)} for k in range(procs)]
    return {"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": gpus,
                         "power": {"pattern": "square", "period_s": 0.5, "duty": 0.5, "high_w": 600,
                                   "low_w": 200}}], "jobs": jobs}


def read_calls(path: Path) -> int:
    return int(path.read_text().split()[0])


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def measure(cmd: list[str], env: dict, tmp: Path, counts: Path, url: str, paced_s: float) -> dict:
    with process(cmd, env, tmp / "exporter.log", url) as proc:
        ps, session = psutil.Process(proc.pid), scrape_session()
        for _ in range(5):  # warm up, as a scraper would
            session.get(url, timeout=10)
            time.sleep(1)
        lat = []
        for _ in range(300):
            s = time.perf_counter()
            session.get(url, timeout=10).raise_for_status()
            lat.append(time.perf_counter() - s)
        time.sleep(1.5)
        c0, n0, t0 = cpu(ps), read_calls(counts), time.monotonic()
        scrapes = 0
        while time.monotonic() - t0 < paced_s:
            session.get(url, timeout=10)
            scrapes += 1
            time.sleep(max(0.0, t0 + scrapes - time.monotonic()))
        time.sleep(1.2)  # the simulator writes its counts once a second
        c1, n1, t1 = cpu(ps), read_calls(counts), time.monotonic()
        lat.sort()
        return {"p50": 1e3 * statistics.median(lat), "p99": 1e3 * lat[int(0.99 * len(lat)) - 1],
                "cpu_s_per_h": (c1 - c0) / (t1 - t0) * 3600, "rss": ps.memory_info().rss / 1e6,
                "calls_per_scrape": (n1 - n0) / scrapes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--procs-per-gpu", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--paced-seconds", type=float, default=30)
    args = ap.parse_args()
    print("| GPUs | procs | exporter | scrape p50 | scrape p99 | CPU s/hour (1 scrape/s) | RSS | NVML calls/scrape |")
    print("|---|---|---|---|---|---|---|---|")
    for gpus in args.gpus:
        for procs in (k * gpus for k in args.procs_per_gpu):
            tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
            trace = write_trace(parse_scenario(scenario(gpus, procs)), time.time(), tmp / "trace.txt")
            res = {}
            for name in ("ours", "nvitop"):
                counts, port = tmp / f"{name}.counts", free_port()
                cmd = ours_cmd(port) if name == "ours" else nvitop_cmd(port)
                if name == "ours":
                    (tmp / "ours.yml").write_text("carbon:\n  zone: DEU\n")
                    cmd += ["--config", str(tmp / "ours.yml")]
                res[name] = measure(cmd, sim_env(trace, counts), tmp, counts, f"http://127.0.0.1:{port}/metrics",
                                    args.paced_seconds)
                r = res[name]
                print(f"| {gpus} | {procs} | {name} | {r['p50']:.2f} ms | {r['p99']:.2f} ms | "
                      f"{r['cpu_s_per_h']:.1f} | {r['rss']:.1f} MB | {r['calls_per_scrape']:.1f} |", flush=True)
            o, p = res["ours"], res["nvitop"]
            print(f"| {gpus} | {procs} | **ours / nvitop** | **{o['p50'] / p['p50']:.3f}×** | "
                  f"**{o['p99'] / p['p99']:.3f}×** | **{o['cpu_s_per_h'] / p['cpu_s_per_h']:.3f}×** | "
                  f"**{o['rss'] / p['rss']:.2f}×** | **{o['calls_per_scrape'] / p['calls_per_scrape']:.3f}×** |",
                  flush=True)


if __name__ == "__main__":
    main()

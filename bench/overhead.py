"""Overhead benchmark: ours vs nvitop-exporter on the same simulated NVML library, side by side.

For 8 and 64 simulated H100s, with 0 and 2 GPU processes per GPU, each exporter runs
alone over tests/nvml_sim's libnvidia-ml.so.1 (our production code through the
real pynvml, with a state file as deployed, so crash checkpoints are written after every
sample; nvitop-exporter 1.7.2 unmodified, --interval 1.0). Measured, in this order:

- idle: the process's CPU (% of one core) and NVML calls per GPU per second over a window
  with no scrape at all (both exporters sample once a second, so calls per second are calls
  per sample);
- scrape latency over 300 back-to-back keep-alive scrapes with Prometheus 3's own Accept
  and Accept-Encoding headers, and the CPU each scrape adds (the burst's CPU minus the idle
  rate over its duration);
- CPU seconds per hour while scraped once a second, NVML calls per scrape, and RSS.

Scrapes go through ``http.client`` (one keep-alive connection), not ``requests``, whose own
overhead (~0.2 ms a request) would hide most of the server's time.

Usage: python bench/overhead.py [--gpus 8 64] [--procs-per-gpu 0 2] [--idle-seconds 30]
       [--paced-seconds 30] [--repeat N] [--ours-only]
With --repeat N each configuration is measured N times (the exporters alternating) and the
median of each figure is printed: on a shared machine a single run is noisy.
"""
from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from common import PROMETHEUS_HEADERS, free_port, nvitop_cmd, ours_cmd, process, sim_env

from gpu_carbon_exporter.sim.scenario import parse_scenario
from gpu_carbon_exporter.sim.trace import write_trace

# The targets of the house issue: (figure, GPUs, bound, what it means).
IDLE_TARGETS = {8: 0.15, 64: 0.6}  # % of one core, with processes
CALLS_PER_GPU_TARGET = 4.0  # NVML calls per GPU per sample, with processes
RSS_TARGET_MB = 35.0
VS_NVITOP_TARGET = 20.0  # ours at least this many times better: scrape p50 and CPU per scrape, 8 GPUs


def scenario(gpus: int, procs: int) -> dict:
    jobs = [{"id": f"j{k}", "devices": [k % gpus], "share": 1.0 / max(1, procs // gpus)} for k in range(procs)]
    return {"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": gpus,
                         "power": {"pattern": "square", "period_s": 0.5, "duty": 0.5, "high_w": 600,
                                   "low_w": 200}}], "jobs": jobs}


def read_calls(path: Path) -> tuple[int, float]:
    """The simulator's NVML call count and the wall time it wrote it (at most once a second, at a call)."""
    count, at = path.read_text().split()[:2]
    return int(count), float(at)


def calls_per_s(a: tuple[int, float], b: tuple[int, float]) -> float:
    return (b[0] - a[0]) / (b[1] - a[1]) if b[1] > a[1] else float("nan")


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


class Scraper:
    """One keep-alive connection that asks for what Prometheus 3 asks for."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self) -> None:
        self.conn.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
        r = self.conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"scrape answered {r.status}")


def measure(cmd: list[str], env: dict, tmp: Path, counts: Path, port: int, gpus: int, idle_s: float,
            paced_s: float) -> dict:
    url = f"http://127.0.0.1:{port}/metrics"
    with process(cmd, env, tmp / "exporter.log", url) as proc:
        ps, scraper = psutil.Process(proc.pid), Scraper(port)
        for _ in range(5):  # warm up, as a scraper would
            scraper.get()
            time.sleep(1)
        time.sleep(1.5)  # the simulator writes its counts once a second
        c0, k0, t0 = cpu(ps), read_calls(counts), time.monotonic()
        time.sleep(idle_s)
        time.sleep(1.2)
        c1, k1, t1 = cpu(ps), read_calls(counts), time.monotonic()
        idle = (c1 - c0) / (t1 - t0)
        scraper = Scraper(port)  # the server closed the idle connection meanwhile (its read timeout)
        scraper.get()
        c1, t1 = cpu(ps), time.monotonic()
        lat = []
        for _ in range(300):
            s = time.perf_counter()
            scraper.get()
            lat.append(time.perf_counter() - s)
        c2, t2 = cpu(ps), time.monotonic()
        per_scrape = max(c2 - c1 - idle * (t2 - t1), 0.0) / 300
        time.sleep(1.5)
        c3, k3, t3 = cpu(ps), read_calls(counts), time.monotonic()
        scrapes = 0
        while time.monotonic() - t3 < paced_s:
            scraper.get()
            scrapes += 1
            time.sleep(max(0.0, t3 + scrapes - time.monotonic()))
        time.sleep(1.2)
        c4, k4, t4 = cpu(ps), read_calls(counts), time.monotonic()
        lat.sort()
        # Calls between two of the simulator's writes, over the time between them: both exporters sample once
        # a second, so calls per second are calls per sample (and, scraped once a second, per scrape).
        return {"idle_pct": 100 * idle, "calls_per_gpu_s": calls_per_s(k0, k1) / gpus, "window_s": k1[1] - k0[1],
                "p50": 1e3 * statistics.median(lat), "p99": 1e3 * lat[int(0.99 * len(lat)) - 1],
                "cpu_ms_per_scrape": 1e3 * per_scrape, "cpu_s_per_h": (c4 - c3) / (t4 - t3) * 3600,
                "rss": ps.memory_info().rss / 1e6, "calls_per_scrape": calls_per_s(k3, k4) * (t4 - t3) / scrapes}


COLUMNS = ("idle_pct", "calls_per_gpu_s", "window_s", "p50", "p99", "cpu_ms_per_scrape", "cpu_s_per_h", "rss",
           "calls_per_scrape")
HEADER = ("| GPUs | procs | exporter | idle CPU (% of a core) | NVML calls/GPU/s idle | scrape p50 | scrape p99 "
          "| CPU per scrape | CPU s/hour (1 scrape/s) | RSS | NVML calls/scrape |")


def row(gpus: int, procs: int, name: str, r: dict) -> str:
    return (f"| {gpus} | {procs} | {name} | {r['idle_pct']:.3f} % | {r['calls_per_gpu_s']:.2f} | {r['p50']:.3f} ms | "
            f"{r['p99']:.3f} ms | {r['cpu_ms_per_scrape']:.3f} ms | {r['cpu_s_per_h']:.1f} | {r['rss']:.1f} MB | "
            f"{r['calls_per_scrape']:.1f} |")


def ratio_row(gpus: int, procs: int, o: dict, p: dict) -> str:
    def x(key: str) -> str:
        return f"**{o[key] / p[key]:.3f}×**" if p[key] else "–"
    return (f"| {gpus} | {procs} | **ours / nvitop** | {x('idle_pct')} | {x('calls_per_gpu_s')} | {x('p50')} | "
            f"{x('p99')} | {x('cpu_ms_per_scrape')} | {x('cpu_s_per_h')} | {x('rss')} | {x('calls_per_scrape')} |")


def targets(results: dict[tuple[int, int], dict[str, dict]]) -> list[str]:
    """One line per target: the figure, the bound, met or not."""
    out = []
    for (gpus, procs), res in sorted(results.items()):
        o, p = res["ours"], res.get("nvitop")
        if procs and gpus in IDLE_TARGETS:
            out.append(_check(f"idle CPU, {gpus} GPUs with processes", o["idle_pct"], IDLE_TARGETS[gpus], "%"))
        if procs:
            # The simulator writes its count at a call, anywhere inside a sample's burst of calls: a window
            # is off by up to one sample's calls, 1/seconds of the figure.
            value, res = o["calls_per_gpu_s"], o["calls_per_gpu_s"] / o["window_s"]
            met = value <= CALLS_PER_GPU_TARGET + res
            out.append(f"- NVML calls per GPU per sample, {gpus} GPUs with processes: {value:.2f} ± {res:.2f} "
                       f"(the window's resolution) (target ≤ {CALLS_PER_GPU_TARGET:g}): {'met' if met else 'NOT met'}")
        out.append(_check(f"RSS, {gpus} GPUs, {procs} processes", o["rss"], RSS_TARGET_MB, " MB"))
        if gpus == 8 and procs and p is not None:  # the targets are with two processes per GPU
            for key, what in (("p50", "scrape p50"), ("cpu_ms_per_scrape", "CPU per scrape")):
                better = p[key] / o[key] if o[key] else float("inf")
                met = better >= VS_NVITOP_TARGET
                out.append(f"- {what} vs nvitop-exporter, 8 GPUs, {procs} processes: {better:.1f}× better "
                           f"(target ≥ {VS_NVITOP_TARGET:.0f}×): {'met' if met else 'NOT met'}")
    return out


def _check(what: str, value: float, bound: float, unit: str) -> str:
    return f"- {what}: {value:.3g}{unit} (target ≤ {bound:g}{unit}): {'met' if value <= bound else 'NOT met'}"


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in COLUMNS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--procs-per-gpu", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--paced-seconds", type=float, default=30)
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration; the median is printed")
    ap.add_argument("--ours-only", action="store_true", help="skip nvitop-exporter (no comparison)")
    args = ap.parse_args()
    names = ("ours",) if args.ours_only else ("ours", "nvitop")
    print(f"{args.repeat} run(s) per configuration, median shown; idle window {args.idle_seconds:g} s, "
          f"paced window {args.paced_seconds:g} s\n")
    print(HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    results: dict[tuple[int, int], dict[str, dict]] = {}
    for gpus in args.gpus:
        for procs in (k * gpus for k in args.procs_per_gpu):
            tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
            trace = write_trace(parse_scenario(scenario(gpus, procs)), time.time(), tmp / "trace.txt")
            runs: dict[str, list[dict]] = {n: [] for n in names}
            for i in range(args.repeat):
                for name in names:
                    counts, port = tmp / f"{name}.counts", free_port()
                    cmd = ours_cmd(port) if name == "ours" else nvitop_cmd(port)
                    if name == "ours":  # as deployed: a state file, so every sample writes a checkpoint
                        (tmp / "ours.yml").write_text(f"carbon:\n  zone: DEU\nstate:\n  path: {tmp}/state-{i}.json\n")
                        cmd += ["--config", str(tmp / "ours.yml")]
                    runs[name].append(measure(cmd, sim_env(trace, counts), tmp, counts, port, gpus,
                                              args.idle_seconds, args.paced_seconds))
            res = results[(gpus, procs)] = {n: median_of(r) for n, r in runs.items()}
            for name in names:
                print(row(gpus, procs, name, res[name]), flush=True)
            if "nvitop" in res:
                print(ratio_row(gpus, procs, res["ours"], res["nvitop"]), flush=True)
    print("\nTargets:")
    print("\n".join(targets(results)))


if __name__ == "__main__":
    main()

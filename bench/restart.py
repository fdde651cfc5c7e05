"""What an exporter restart costs in PromQL: increase() over windows that span a kill -9 and restart.

Two exporters (``--simulate`` over the same scenario file: 8 A100-like GPUs with bursty loads and
a fixed epoch, so their simulated energy counters run on across restarts like a real driver's)
are scraped by one real Prometheus at 1 s and at 15 s. One is killed with SIGKILL and restarted
at once, every ``--every`` seconds (``--restarts`` times), with ``--state.path``; the other runs
throughout (no fault). For each restart, ``sum(increase(gpu_carbon_gpu_energy_joules_total[90s]))``
is evaluated at 8 window ends (10 s to 80 s after the restart, so every window spans it) and
compared with the scenario's exact ground truth over the same window.

Usage: python bench/restart.py [--restarts 3] [--every 100] [--window 90]
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import free_port, process, prometheus, query, wait_for, wait_http

from gpu_carbon_exporter.sim.scenario import GroundTruth, parse_scenario

GPUS = 8


def scenario(start: float) -> dict:
    bursty = [{"model": "NVIDIA A100-SXM4-80GB",
               "power": {"pattern": "bursts", "seed": 20 + i, "low_w": 90, "high_w": 400,
                         "mean_on_s": 0.4 + 0.2 * i, "mean_off_s": 0.7 + 0.1 * i}} for i in range(GPUS)]
    return {"name": "restart-bench", "start_time": start, "zone": "Z", "pue": 1.0,
            "intensity": {"Z": [[0, 300]]}, "devices": bursty}


def exporter_cmd(port: int, sc: Path, state: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "gpu_carbon_exporter", "--simulate", str(sc),
           "--web.listen-address", f"127.0.0.1:{port}"]
    return cmd + (["--state.path", str(state)] if state else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--every", type=float, default=100.0, help="seconds between restarts (> window)")
    ap.add_argument("--window", type=int, default=90)
    args = ap.parse_args()
    W = args.window
    assert args.every > W - 10, "every window must span exactly one restart"
    tmp = Path(tempfile.mkdtemp(prefix="restart-bench-"))
    start = time.time()
    data = scenario(start)
    (tmp / "scenario.yaml").write_text(yaml.safe_dump(data))
    truth = GroundTruth(parse_scenario(data))
    p_fault, p_ok = free_port(), free_port()
    log = open(tmp / "restarted.log", "w")
    cmd = exporter_cmd(p_fault, tmp / "scenario.yaml", tmp / "state.json")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    restarts: list[float] = []
    try:
        wait_http(f"http://127.0.0.1:{p_fault}/healthz", timeout=60, proc=proc)
        with process(exporter_cmd(p_ok, tmp / "scenario.yaml", None), dict(os.environ), tmp / "control.log",
                     f"http://127.0.0.1:{p_ok}/healthz"):
            jobs = {"fault_1s": (f"127.0.0.1:{p_fault}", "1s"), "fault_15s": (f"127.0.0.1:{p_fault}", "15s"),
                    "ok_1s": (f"127.0.0.1:{p_ok}", "1s"), "ok_15s": (f"127.0.0.1:{p_ok}", "15s")}
            with prometheus(tmp, jobs) as prom:
                first = max(wait_for(prom, f'up{{job="{j}"}} == 1') for j in jobs)
                for k in range(args.restarts):
                    time.sleep(max(first + (k + 1) * args.every - time.time(), 0))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=10)
                    restarts.append(time.time())
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
                    wait_http(f"http://127.0.0.1:{p_fault}/healthz", timeout=60, proc=proc)
                time.sleep(max(restarts[-1] + 82 - time.time(), 0))
                rows = evaluate(prom, truth, start, restarts, W)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    print(f"{len(restarts)} kill -9 + restarts, {GPUS} bursty A100-like GPUs, 1-s sampling, "
          f"increase() over {W} s windows ending 10-80 s after each restart ({len(rows['fault_1s'])} windows)\n")
    print("| scrape interval | restarted: mean error | mean \\|error\\| | worst | no fault: mean error "
          "| mean \\|error\\| | worst |")
    print("|---|---|---|---|---|---|---|")
    for iv in ("1s", "15s"):
        cells = []
        for kind in ("fault", "ok"):
            errs = rows[f"{kind}_{iv}"]
            cells += [f"{statistics.mean(errs):+.2f} %", f"{statistics.mean(map(abs, errs)):.2f} %",
                      f"{max(errs, key=abs):+.2f} %"]
        print(f"| {iv} | " + " | ".join(cells) + " |")


def evaluate(prom: str, truth: GroundTruth, start: float, restarts: list[float], W: int) -> dict[str, list[float]]:
    """Percent error of the fleet's increase() per job, for every window end after every restart."""
    rows: dict[str, list[float]] = {}
    for r in restarts:
        for after in range(10, 81, 10):
            at = r + after
            want = sum(truth.device_energy_j(g, at - W - start, at - start) for g in range(GPUS))
            for res in query(prom, f"sum by (job) (increase(gpu_carbon_gpu_energy_joules_total[{W}s]))", at):
                got = float(res["value"][1])
                rows.setdefault(res["metric"]["job"], []).append(100 * (got - want) / want)
    return rows


if __name__ == "__main__":
    main()

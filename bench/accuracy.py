"""Accuracy benchmark: energy and carbon error against exact ground truth, ours vs peers.

Every workload is one simulated GPU of the C NVML simulator (tests/nvml_sim), so
our exporter (production code, real pynvml) and nvitop-exporter (unmodified)
read the same GPUs, and one Prometheus scrapes both at 1 s and at 15 s.
Workloads run twice: on H100-like GPUs (nvmlDeviceGetPowerUsage = 1-s average)
and A100-like ones (instantaneous: a 25-ms window every 100 ms).

Usage: python bench/accuracy.py [--window 150]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from common import nvitop_cmd, ours_cmd, process, prometheus, query, sim_env, wait_for, free_port

from gpu_carbon_exporter.sim.scenario import GroundTruth, parse_scenario
from gpu_carbon_exporter.sim.trace import write_trace

STEP_S = 30.0  # intensity step length, in phase with the "correlated" workload
WORKLOADS: dict[str, dict] = {}
for period in (0.01, 0.1, 1.0):
    for duty in (0.1, 0.5, 0.9):
        WORKLOADS[f"square {period * 1000:g} ms, duty {duty:.0%}"] = {
            "pattern": "square", "period_s": period, "duty": duty, "high_w": 650, "low_w": 100}
WORKLOADS["random bursts"] = {"pattern": "bursts", "seed": 11, "low_w": 110, "high_w": 620,
                              "mean_on_s": 0.3, "mean_off_s": 0.6}
WORKLOADS["demo training"] = {"pattern": "square", "period_s": 2.1, "duty": 0.8, "high_w": 640, "low_w": 380}
WORKLOADS["demo inference"] = {"pattern": "bursts", "seed": 7, "low_w": 110, "high_w": 520,
                               "mean_on_s": 0.8, "mean_off_s": 1.5}
WORKLOADS["correlated with intensity"] = {"pattern": "steps", "steps": [[0, 650], [STEP_S, 150]],
                                          "repeat_s": 2 * STEP_S}
MODES = {"average_1s": "NVIDIA H100 80GB HBM3", "instant": "NVIDIA A100-SXM4-80GB"}


def scenario() -> dict:
    devices = [{"model": model, "power": spec} for model in MODES.values() for spec in WORKLOADS.values()]
    steps = [[k * STEP_S, 500 if k % 2 == 0 else 100] for k in range(40)]
    return {"zone": "sim", "pue": 1.0, "intensity": {"sim": steps}, "devices": devices}


def err(got: float, want: float) -> str:
    return "n/a" if math.isnan(got) else f"{100 * (got - want) / want:+.2f} %"


def raw_deltas(results: list[dict]) -> dict[int, tuple[float, float, float]]:
    """gpu -> (first sample time, last sample time, value delta) of a range vector."""
    out = {}
    for r in results:
        (ta, va), (tb, vb) = r["values"][0], r["values"][-1]
        out[int(r["metric"]["gpu"])] = (float(ta), float(tb), float(vb) - float(va))
    return out


def by_gpu(results: list[dict]) -> dict[int, float]:
    key = "gpu" if results and "gpu" in results[0]["metric"] else "index"
    return {int(r["metric"][key]): float(r["value"][1]) for r in results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--window", type=float, default=150.0, help="seconds of data compared")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="accuracy-"))
    data = scenario()
    sc = parse_scenario(data)
    truth = GroundTruth(sc)
    epoch = time.time()
    trace = write_trace(sc, epoch, tmp / "trace.txt")
    (tmp / "intensity.csv").write_text("".join(f"{epoch + t!r},{v}\n" for t, v in data["intensity"]["sim"]))
    (tmp / "ours.yml").write_text("carbon:\n  zone: sim\n  zones:\n"
                                  f"    sim: {{provider: file, path: {tmp / 'intensity.csv'}}}\n")
    env = sim_env(trace)
    p_ours, p_peer = free_port(), free_port()
    W = int(args.window)
    with process(ours_cmd(p_ours, tmp / "ours.yml"), env, tmp / "ours.log", f"http://127.0.0.1:{p_ours}/metrics"), \
         process(nvitop_cmd(p_peer), env, tmp / "nvitop.log", f"http://127.0.0.1:{p_peer}/metrics"):
        jobs = {"ours_1s": (f"127.0.0.1:{p_ours}", "1s"), "ours_15s": (f"127.0.0.1:{p_ours}", "15s"),
                "nvitop_1s": (f"127.0.0.1:{p_peer}", "1s"), "nvitop_15s": (f"127.0.0.1:{p_peer}", "15s")}
        with prometheus(tmp, jobs) as prom:
            start = max(wait_for(prom, f'up{{job="{j}"}} == 1') for j in jobs)
            wait_for(prom, 'gpu_power_usage_W{job="nvitop_15s"}')
            time.sleep(W + 16)
            at = time.time() - 1
            assert at - W > start
            q = lambda promql: by_gpu(query(prom, promql, at))  # noqa: E731
            got = {
                "counter_1s": q(f'increase(gpu_carbon_gpu_energy_joules_total{{job="ours_1s"}}[{W}s])'),
                "counter_15s": q(f'increase(gpu_carbon_gpu_energy_joules_total{{job="ours_15s"}}[{W}s])'),
                "gauge_1s": q(f'avg_over_time(gpu_carbon_gpu_power_watts{{job="ours_1s"}}[{W}s]) * {W}'),
                "gauge_15s": q(f'avg_over_time(gpu_carbon_gpu_power_watts{{job="ours_15s"}}[{W}s]) * {W}'),
                "nvitop_1s": q(f'avg_over_time(gpu_power_usage_W{{job="nvitop_1s"}}[{W}s]) * {W}'),
                "nvitop_15s": q(f'avg_over_time(gpu_power_usage_W{{job="nvitop_15s"}}[{W}s]) * {W}'),
                "counter_raw": raw_deltas(query(prom, 'gpu_carbon_gpu_energy_joules_total'
                                                      f'{{job="ours_1s"}}[{W}s]', at)),
                "co2_raw": raw_deltas(query(prom, f'gpu_carbon_gpu_emissions_grams_total{{job="ours_1s"}}[{W}s]', at)),
                "co2_ours": q(f'increase(gpu_carbon_gpu_emissions_grams_total{{job="ours_1s"}}[{W}s])'),
                "co2_promql": q(f'increase(gpu_carbon_gpu_energy_joules_total{{job="ours_1s"}}[{W}s]) '
                                f'* on() group_left avg_over_time(gpu_carbon_grid_intensity_grams_per_kwh'
                                f'{{job="ours_1s"}}[{W}s]) / 3.6e6'),
            }
    t0, t1 = at - W - epoch, at - epoch
    n = len(WORKLOADS)
    print(f"window {W} s ending {t1:.0f} s into the run; Prometheus 1-s and 15-s scrape jobs; "
          f"our exporter at its default 1-s sampling; nvitop-exporter 1.7.2 at --interval 1.0\n")
    cols = ["counter_1s", "counter_15s", "gauge_1s", "gauge_15s", "nvitop_1s", "nvitop_15s"]
    for m, (mode, model) in enumerate(MODES.items()):
        print(f"### {model} (nvmlDeviceGetPowerUsage: {mode})\n")
        print("| workload | truth | (a) our counter, raw samples | (a) our counter, increase() 1 s | "
              "(a) increase() 15 s | (b) our gauge, 1 s | (b) our gauge, 15 s | (c) nvitop gauge, 1 s | "
              "(c) nvitop gauge, 15 s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for k, name in enumerate(WORKLOADS):
            gpu = m * n + k
            want = truth.device_energy_j(gpu, t0, t1)
            ta, tb, delta = got["counter_raw"][gpu]
            raw = err(delta, truth.device_energy_j(gpu, ta - epoch, tb - epoch))
            print(f"| {name} | {want / 1000:.2f} kJ | {raw} | "
                  + " | ".join(err(got[c].get(gpu, math.nan), want) for c in cols) + " |")
        print()
    print("### Carbon under a stepped intensity (500/100 gCO2e/kWh, 30-s steps), H100-like GPUs\n")
    print("| workload | truth | exporter-side counter, raw samples | exporter-side counter, increase() | "
          "PromQL increase(energy) x avg_over_time(intensity) |")
    print("|---|---|---|---|---|")
    for k, name in enumerate(WORKLOADS):
        want = truth.device_emissions_g(k, t0, t1)
        ta, tb, delta = got["co2_raw"][k]
        raw = err(delta, truth.device_emissions_g(k, ta - epoch, tb - epoch))
        print(f"| {name} | {want:.3f} g | {raw} | {err(got['co2_ours'].get(k, math.nan), want)} | "
              f"{err(got['co2_promql'].get(k, math.nan), want)} |")


if __name__ == "__main__":
    main()

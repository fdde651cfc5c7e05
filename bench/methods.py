"""Energy error per measurement method on GPUs without the energy counter, against exact ground truth.

Twelve A100-like GPUs with the energy counter disabled run square waves of 200 ms to 3.7 s
(duty 10 % and 50 %, 60-400 W). Their sensor, like A100/H100, refreshes every 100 ms; the
instantaneous reading covers a 25-ms window, the POWER_AVERAGE field the last second. The
production meter integrates at 10 Hz, once with the average field (``integrated_average``)
and once without it (``integrated``: nvmlDeviceGetPowerUsage).

Usage: python bench/methods.py [--seconds 300]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import ManualClock, sim_nvml

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.scenario import GroundTruth
from gpu_carbon_exporter.sources.nvml import NvmlSource

PERIODS_S = (0.2, 0.35, 0.7, 1.3, 2.1, 3.7)


def fleet(power_fields: bool) -> dict:
    return {"devices": [{"model": "NVIDIA A100-SXM4-80GB", "energy_counter": False, "power_fields": power_fields,
                         "power": {"pattern": "square", "period_s": p, "duty": d, "high_w": 400, "low_w": 60}}
                        for p in PERIODS_S for d in (0.1, 0.5)]}


def errors(power_fields: bool, seconds: int) -> tuple[str, float, list[float]]:
    """(method, fleet error %, per-GPU errors %) after ``seconds`` of 10-Hz integration."""
    clock = ManualClock()
    nv = sim_nvml(fleet(power_fields), clock)
    meter = Meter([NvmlSource(nv)], StaticIntensity("Z", 100), clock=clock)
    meter.open()
    meter.sample()
    for _ in range(seconds):
        for _ in range(9):
            clock.advance(0.1)
            meter.integrate()
        clock.advance(0.1)
        meter.sample()
    truth = GroundTruth(nv.scenario)
    want = [truth.device_energy_j(i, 0, seconds) for i in range(len(nv.scenario.devices))]
    got = [d.counters.energy_j for d in meter.snapshot.devices]
    per = [100 * (g - w) / w for g, w in zip(got, want)]
    return meter.snapshot.devices[0].method, 100 * (sum(got) - sum(want)) / sum(want), per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=300)
    args = ap.parse_args()
    print(f"{'method':<20} {'fleet error':>12} {'worst GPU':>10}   per GPU (%)")
    for power_fields in (True, False):
        method, total, per = errors(power_fields, args.seconds)
        worst = max(per, key=abs)
        print(f"{method:<20} {total:>+11.2f}% {worst:>+9.2f}%   {' '.join(f'{e:+.1f}' for e in per)}")


if __name__ == "__main__":
    main()

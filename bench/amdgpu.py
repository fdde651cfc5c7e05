"""CPU cost of the amdgpu source: one read of every card, as the meter's sample makes it.

The built-in mi300x scenario's 8 cards, in the simulator's fake amdgpu sysfs tree under /tmp (on
real hardware a gpu_metrics read also makes the driver fetch the firmware's table, in kernel time
this does not see), read by the production
``AmdgpuSource``: a sample (the gpu_metrics table, hwmon power, busy, VRAM, temperature, sclk),
a slow one (the power cap too), and the power-only read that the 10-Hz integration of a card
without an accumulator makes, in process CPU time per card per read.

Usage: python bench/amdgpu.py [--samples 500]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from gpu_carbon_exporter.sim.amdgpu import AmdgpuSimulator
from gpu_carbon_exporter.sim.scenario import load_scenario
from gpu_carbon_exporter.sources.amdgpu import AmdgpuSource


def skip_counter_check(seconds: float) -> None:
    """The simulated tree is not kept current here, so its accumulators stand still: the source's
    start-up check of them (0.5 s against the power gauge) is left undecided, and they are read."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="samples to time (default 500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-amdgpu-") as root:
        AmdgpuSimulator(root, load_scenario("mi300x").devices)
        source = AmdgpuSource(root, sleep=skip_counter_check)
        cards = source.open()
        print("| read | CPU per card per read | 8 cards |\n|---|---|---|")
        for what, hz, read in (("sample", 1, lambda c: source.read(c, slow=False)),
                               ("slow sample (power cap too)", 1, lambda c: source.read(c, slow=True)),
                               ("power only (integration, no accumulator)", 10, source.read_power_mw)):
            start = time.process_time()
            for _ in range(args.samples):
                for card in cards:
                    read(card)
            per_card = (time.process_time() - start) / args.samples / len(cards)
            print(f"| {what} | {per_card * 1e6:.0f} µs | {per_card * len(cards) * hz * 100:.3f} % of a core "
                  f"at {hz} Hz |")


if __name__ == "__main__":
    main()

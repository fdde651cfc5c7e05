"""Footprint on small boards: RSS and CPU with only the edge sources enabled.

The bench process keeps a simulated sysfs tree current (the board's layout plus RAPL zones,
50 Hz writes, outside the measured process); the exporter runs its production sources over it
(Jetson and RAPL; hwmon for --board rpi; battery for --board laptop) with NVML disabled and
sensors integrated at 10 Hz, and is scraped every 15 s.
Usage: python bench/edge.py [--seconds 60] [--board orin|xavier|nano|thor|rpi|laptop]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import psutil
import requests

from common import free_port, ours_cmd, process

from gpu_carbon_exporter.sim.patterns import Square
from gpu_carbon_exporter.sim.sysfs import EdgeBoard, SysfsSimulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--board", default="orin")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edge-sysfs-"))
    t0 = time.time()
    sim = SysfsSimulator(root, EdgeBoard(args.board, Square(2.0, 0.5, 40.0, 10.0)), rapl=Square(5.0, 0.5, 15.0, 5.0))
    sim.run(lambda: time.time() - t0)
    cfg = root.parent / f"{root.name}.yml"
    cfg.write_text(f"sources:\n  nvml: {{enabled: false}}\n  jetson: {{sysfs_root: {root}}}\n"
                   f"  rapl: {{sysfs_root: {root}}}\n  hwmon: {{enabled: {str(args.board == 'rpi').lower()}, "
                   f"sysfs_root: {root}, whole_device: [ina219]}}\n  battery: {{sysfs_root: {root}}}\n"
                   "sampling:\n  integration_hz: 10\ncarbon:\n  zone: DEU\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with process(ours_cmd(port, cfg), dict(os.environ), root.parent / f"{root.name}.log", url) as proc:
        ps = psutil.Process(proc.pid)
        time.sleep(3)
        c0, w0 = sum(ps.cpu_times()[:2]), time.monotonic()
        next_scrape = w0
        while time.monotonic() - w0 < args.seconds:
            if time.monotonic() >= next_scrape:
                text = requests.get(url, timeout=5).text
                next_scrape += 15
            time.sleep(0.2)
        cpu = (sum(ps.cpu_times()[:2]) - c0) / (time.monotonic() - w0)
        rss = ps.memory_info().rss / 1e6
    sim.stop()
    rails = sum(text.count(f"gpu_carbon_{k}_up{{") for k in ("rail", "hwmon", "node"))
    zones = text.count("gpu_carbon_cpu_up{")
    print("| board | rails / sensors | RAPL zones | integration | CPU (% of a core) | RSS |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.board} | {rails} | {zones} | 10 Hz | {100 * cpu:.2f} % | {rss:.1f} MB |")


if __name__ == "__main__":
    main()

"""Runs the exporter's production stack over N simulated GPUs for the benchmarks.

Same meter, collector and HTTP server as ``gpu-carbon-exporter --simulate``;
it also dumps the simulator's NVML call counts to a file on SIGUSR1.
Usage: python bench/_sim_exporter.py N_GPUS PORT COUNTS_FILE [INTERVAL_S]
"""
import json
import signal
import sys
import threading
import time

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.startup import build_attribution, make_collector
from gpu_carbon_exporter.config import parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.nvml import SimulatedNvml
from gpu_carbon_exporter.sim.scenario import parse_scenario
from gpu_carbon_exporter.sources.nvml import NvmlSource
from gpu_carbon_exporter.web import ExporterServer, WebConfig


def main() -> None:
    n, port, counts_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    sc = parse_scenario({"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": n,
                                      "power": {"pattern": "constant", "watts": 400}}]})
    t0 = time.time()
    nv = SimulatedNvml(sc, lambda: time.time() - t0)
    # the production defaults: attribution on (process lists read every sample)
    attribution = build_attribution(parse_config({})["attribution"])
    meter = Meter([NvmlSource(nv, read_processes=True)], StaticIntensity("DEU", 380), pue=1.2,
                  interval_seconds=interval, attribution=attribution)
    meter.start()
    server = ExporterServer(("127.0.0.1", port), make_collector(meter, parse_config({})), WebConfig(),
                            lambda: (True, "ok"))

    def dump(*_):
        with open(counts_file, "w") as fh:
            json.dump({"time": time.time(), "calls": sum(nv.calls.values())}, fh)

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    dump()
    server.serve_forever(poll_interval=1.0)


if __name__ == "__main__":
    main()

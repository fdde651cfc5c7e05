#!/usr/bin/env bash
# Real-GPU smoke check: install, run the exporter on the real GPUs for 60 s under
# load (a matmul loop when torch is available, else idle), then print the
# energy-counter joules beside power-integration joules and a promtool check.
# Usage: scripts/gpu-smoke.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-60}"
python3 -m pip install -q --disable-pip-version-check . >/dev/null
OUT="${OUT:-$(mktemp -d)}"

python3 - "$SECONDS_TO_RUN" "$OUT" <<'PY'
import subprocess, sys, threading, time
import pynvml

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.cli import make_registry
from gpu_carbon_exporter.config import parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sources.nvml import NvmlSource
from prometheus_client.exposition import generate_latest

duration, out = float(sys.argv[1]), sys.argv[2]
stop = threading.Event()

def load():
    try:
        import torch
    except ImportError:
        print("torch not available: GPUs stay idle")
        return
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    while not stop.is_set():
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()

worker = threading.Thread(target=load, daemon=True)
meter = Meter([NvmlSource(pynvml)], StaticIntensity("test", 400.0), sample_interval_s=1.0)
meter.open()
meter.sample()
handles = [pynvml.nvmlDeviceGetHandleByIndex(d.identity.index) for d in meter.snapshot.devices]
integrated = [0.0] * len(handles)
last = [pynvml.nvmlDeviceGetPowerUsage(h) / 1e3 for h in handles]
worker.start()
t_prev = t_start = time.monotonic()
next_full = t_start + 1.0
while time.monotonic() - t_start < duration:
    time.sleep(0.1)  # 10-Hz trapezoid integration of the power gauge
    now = time.monotonic()
    for i, h in enumerate(handles):
        p = pynvml.nvmlDeviceGetPowerUsage(h) / 1e3
        integrated[i] += 0.5 * (p + last[i]) * (now - t_prev)
        last[i] = p
    t_prev = now
    if now >= next_full:
        meter.sample()
        next_full += 1.0
meter.sample()
stop.set()
print(f"{'gpu':>3} {'name':<28} {'counter J':>12} {'integrated J':>13} {'diff %':>8}")
for i, d in enumerate(meter.snapshot.devices):
    c = d.counters.energy_j
    print(f"{d.identity.index:>3} {d.identity.name[:28]:<28} {c:>12.1f} {integrated[i]:>13.1f} "
          f"{100 * (integrated[i] - c) / c if c else float('nan'):>+8.2f}")
text = generate_latest(make_registry(meter, parse_config({})))
open(f"{out}/metrics.prom", "wb").write(text)
r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
print("promtool check metrics:", "OK" if r.returncode == 0 else "FAILED", (r.stdout + r.stderr).decode().strip())
meter.stop()
PY

"""Exposition: a golden fixture (GPUs, an hwmon sensor, a whole-node meter, the network and disk
estimates), checked by the real promtool, and naming conventions."""
import os
import re
import subprocess
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.collector import SnapshotCollector
from gpu_carbon_exporter.meter import Embodied, Meter
from gpu_carbon_exporter.sources.nvml import NvmlSource

from conftest import require_binary, sim_nvml

GOLDEN = Path(__file__).parent / "fixtures" / "golden.prom"
FLEET = {"devices": [
    {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 400}, "mig_instances": 2},
    {"model": "Tesla P100-PCIE-16GB", "power": {"pattern": "constant", "watts": 150}},
    {"model": "NVIDIA A100-SXM4-80GB", "power": {"pattern": "constant", "watts": 250}},
]}


def other_devices(root: Path, clock) -> list:
    """An hwmon sensor (ina219), the ACPI power meter, and the network and disk estimates, over
    fixed sysfs/procfs trees (tests/test_more_devices.py lays out the same)."""
    from test_more_devices import disk_tree, hwmon_tree, netdev
    from gpu_carbon_exporter.sources.hwmon import HwmonSource
    from gpu_carbon_exporter.sources.network import NetworkEstimate
    from gpu_carbon_exporter.sources.storage import StorageEstimate

    hwmon_tree(root)
    disk_tree(root)
    netdev(root, {"eth0": (10**6, 2 * 10**6)})
    (root / "sys/devices/pci/eth0").mkdir(parents=True)
    (root / "sys/class/net").mkdir(parents=True, exist_ok=True)
    os.symlink(root / "sys/devices/pci/eth0", root / "sys/class/net/eth0")
    return [HwmonSource(root, allow=("ina219", "power_meter"), clock=clock), NetworkEstimate(root, clock=clock),
            StorageEstimate(root, clock=clock)]


def exposition(clock) -> str:
    import tempfile

    nv = sim_nvml(FLEET, clock)
    meter = Meter([NvmlSource(nv), *other_devices(Path(tempfile.mkdtemp()), clock)], StaticIntensity("DEU", 380.0),
                  pue=1.25, clock=clock, embodied=Embodied(150, 5), wue_liters_per_kwh=1.8)
    meter.open()
    meter.sample()
    for _ in range(100):
        clock.advance(0.1)
        meter.integrate()
    nv.lost.add(2)
    meter.sample()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: meter.snapshot, embodied=True, water=True, clock=clock))
    clock.advance(0.5)
    text = generate_latest(registry).decode()
    return re.sub(r'(collector_duration_seconds\{[^}]*\}) \S+', r'\1 0.0', text)  # wall-clock dependent


def test_golden_exposition(clock):
    text = exposition(clock)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_promtool_accepts_the_golden_exposition():
    promtool = require_binary("promtool")
    out = subprocess.run([promtool, "check", "metrics"], input=GOLDEN.read_bytes(),
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    assert out.stdout.strip() == b"" and out.stderr.strip() == b"", "promtool lint findings"


def test_conventions(clock):
    text = exposition(clock)
    names = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    assert names and all(n.startswith("gpu_carbon_") for n, _ in names)
    for name, kind in names:
        if kind == "counter":
            assert name.endswith("_total") and re.search(rf"^{name}\{{", text, re.M), name
    assert not re.search(r"\b(hostname|instance|job)=", text)
    # no timestamps: every sample line is "name{labels} value"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            value_part = line.rsplit("} ", 1)[1] if "}" in line else line.split(" ", 1)[1]
            assert len(value_part.split()) == 1, line


def test_lost_gpu_keeps_counters_but_drops_gauges(clock):
    text = exposition(clock)
    assert 'gpu_carbon_gpu_up{gpu="2",uuid="GPU-5e3a0000-0000-4000-8000-000000000002",vendor="nvidia"} 0.0' in text
    assert 'gpu_carbon_gpu_power_watts{gpu="2"' not in text
    assert 'gpu_carbon_gpu_energy_joules_total{gpu="2"' in text
    assert 'method="integrated"' in text and 'method="counter"' in text


def test_promtool_accepts_job_and_edge_families(clock, tmp_path):
    """The demo node with jobs (one declaring its units of work) and RAPL, after some samples,
    passes promtool's lint too."""
    from gpu_carbon_exporter.startup import build_meter, make_registry
    from gpu_carbon_exporter.config import parse_config

    (tmp_path / "4712").write_text("1500 images\n")
    cfg = parse_config({"attribution": {"work_dir": str(tmp_path)}})
    meter, _ = build_meter(cfg, "")
    meter.open()
    for _ in range(3):
        meter.sample()
    text = generate_latest(make_registry(meter, cfg))
    meter.stop()
    assert b"gpu_carbon_job_energy_joules_total" in text and b"gpu_carbon_cpu_energy_joules_total" in text
    assert b'gpu_carbon_job_work_units_total{job_id="4712",scheduler="slurm",unit="images"} 1500.0' in text
    out = subprocess.run([require_binary("promtool"), "check", "metrics"], input=text, capture_output=True)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_fast_renderer_is_byte_identical_to_prometheus_client(clock):
    """web.py serves the text format with exposition.render_text: same bytes as generate_latest."""
    from gpu_carbon_exporter.startup import build_meter, make_registry
    from gpu_carbon_exporter.config import parse_config
    from gpu_carbon_exporter.exposition import render_text

    cfg = parse_config({"carbon": {"embodied": {"kg_co2e_per_device": 150}, "wue_liters_per_kwh": 1.7}})
    meter, _ = build_meter(cfg, "jobs-mix")
    meter.open()
    for _ in range(3):
        meter.sample()
    registry = make_registry(meter, cfg)
    meter.stop()
    fixed = lambda text: re.sub(rb"(collector_last_run_age_seconds\{[^}]*\}) \S+", rb"\1 0", text)  # noqa: E731
    assert fixed(render_text(registry)) == fixed(generate_latest(registry))
    assert render_text(registry).count(b"gpu_carbon_job_energy_joules_total{") >= 6

"""Jetson rails, RAPL, Redfish, IPMI and estimated CPU on realistic fixtures."""
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.patterns import Constant, PiecewiseConstant
from gpu_carbon_exporter.sim.sysfs import RAPL_MAX_UJ, EdgeBoard, SysfsSimulator
from gpu_carbon_exporter.sources.base import SourceUnavailable
from gpu_carbon_exporter.sources.cpu_estimate import EstimatedCpuSource
from gpu_carbon_exporter.sources.jetson import JetsonSource
from gpu_carbon_exporter.sources.node import IpmiSource, RedfishSource, parse_dcmi
from gpu_carbon_exporter.sources.rapl import RaplSource

from conftest import ManualClock
from fakeapi import FakeApi


def board(tmp_path, kind, watts=12.0):
    SysfsSimulator(tmp_path, EdgeBoard(kind, Constant(watts)))
    src = JetsonSource(tmp_path)
    return src, src.open()


@pytest.mark.parametrize("kind, rails, total", [
    ("orin", ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"], "VDD_IN"),
    ("xavier", ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"], "sum"),
    ("nano", ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"], "POM_5V_IN"),
    ("thor", ["VDD_IN"], "VDD_IN"),
])
def test_jetson_layouts(tmp_path, kind, rails, total):
    src, devices = board(tmp_path, kind, watts=12.0)
    b, *rail_devs = devices
    assert b.kind == "board" and b.accounted and not b.has_energy_counter
    assert [d.name for d in rail_devs] == rails  # NC and the sum channel are skipped
    assert not any(d.accounted for d in rail_devs)  # rails are inside the board total
    r = src.read(b, slow=True)
    assert r.power_mw == pytest.approx(12_000, rel=0.01)
    assert r.gpu_util_pct is not None and 0 <= r.gpu_util_pct <= 100
    first = src.read(rail_devs[0], slow=False).power_mw
    share = {"orin": 1.0, "xavier": 0.4, "nano": 1.0, "thor": 1.0}[kind]
    assert first == pytest.approx(12_000 * share, rel=0.01)


def test_jetson_model_is_found_with_only_sys_mounted(tmp_path):
    """A container mounting only the host's /sys (the Kubernetes edge overlay): /proc/device-tree
    is not there, its target /sys/firmware/devicetree/base is."""
    SysfsSimulator(tmp_path, EdgeBoard("orin", Constant(12.0)))
    model = (tmp_path / "proc/device-tree/model").read_text()
    (tmp_path / "proc/device-tree/model").unlink()
    (tmp_path / "sys/firmware/devicetree/base").mkdir(parents=True)
    (tmp_path / "sys/firmware/devicetree/base/model").write_text(model)
    (b, *_) = JetsonSource(tmp_path).open()
    assert b.name == model.strip("\x00\n ") and b.name != "jetson"


def test_no_jetson_is_source_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable, match="no Jetson power monitor"):
        JetsonSource(tmp_path).open()


def test_integrated_rail_energy_matches_ground_truth(tmp_path):
    """A known trace on VDD_IN, read at 10 Hz and integrated by the meter: within 1 %."""
    pattern = PiecewiseConstant([0, 3.05, 7.5, 12.25, 16], [9.0, 31.0, 14.5, 45.0, 11.0])
    sim = SysfsSimulator(tmp_path, EdgeBoard("orin", pattern))
    clock = ManualClock()
    meter = Meter([JetsonSource(tmp_path, clock=clock)], StaticIntensity("Z", 300), clock=clock)
    meter.open()
    meter.sample()
    for step in range(1, 201):  # 20 s: full sample every 1 s, integration at 10 Hz
        clock.advance(0.1)
        sim.update(clock.sim)
        meter.sample() if step % 10 == 0 else meter.integrate()
    board_dev = meter.snapshot.devices[0]
    assert board_dev.method == "integrated"
    assert board_dev.counters.energy_j == pytest.approx(pattern.energy(20.0), rel=0.01)
    assert board_dev.counters.emissions_g > 0
    assert all(d.counters.emissions_g == 0 for d in meter.snapshot.devices[1:])


# -- RAPL ------------------------------------------------------------------------
def test_rapl_zones_nesting_and_mmio_duplicate(tmp_path):
    SysfsSimulator(tmp_path, rapl=Constant(100.0), rapl_packages=2)
    devices = RaplSource(tmp_path).open()
    by = {dict(d.labels)["zone"]: d for d in devices}
    assert "intel-rapl-mmio:0" not in by  # the MSR zone of the same package wins
    assert by["intel-rapl:0"].accounted and by["intel-rapl:1"].accounted  # packages
    assert by["intel-rapl:0:2"].accounted  # DRAM is outside the package
    assert not by["intel-rapl:0:0"].accounted and not by["intel-rapl:0:1"].accounted  # core, uncore


def test_rapl_with_psys_accounts_psys_only(tmp_path):
    SysfsSimulator(tmp_path, rapl=Constant(100.0), psys=True)
    devices = RaplSource(tmp_path).open()
    assert [dict(d.labels)["domain"] for d in devices if d.accounted] == ["psys"]


def test_rapl_energy_is_wrap_safe(tmp_path):
    pattern = Constant(200.0)
    sim = SysfsSimulator(tmp_path, rapl=pattern, rapl_offset_uj=RAPL_MAX_UJ - 5_000_000)  # wraps after 25 ms
    clock = ManualClock()
    meter = Meter([RaplSource(tmp_path, clock=clock)], StaticIntensity("Z", 300), clock=clock)
    meter.open()
    meter.sample()
    for _ in range(10):
        clock.advance(1.0)
        sim.update(clock.sim)
        meter.sample()
    pkg = next(d for d in meter.snapshot.devices if d.identity.name == "package-0")
    assert pkg.method == "counter"
    assert pkg.counters.energy_j == pytest.approx(2000.0, abs=0.01)
    assert pkg.reading.power_mw == pytest.approx(200_000, rel=0.01)


def test_rapl_permission_denied_is_clear_and_not_fatal(tmp_path):
    """energy_uj is root-only since CVE-2020-8694: read it without the privilege to bypass that."""
    root = Path(tempfile.mkdtemp())
    SysfsSimulator(root, rapl=Constant(50.0))
    for f in root.rglob("energy_uj"):
        f.chmod(0)
    code = f"""
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.sources.rapl import RaplSource
m = Meter([RaplSource({str(root)!r})], StaticIntensity("Z", 1))
m.open(); m.sample()
print("UP", [d.up for d in m.snapshot.devices], "SUCCESS", m.snapshot.collectors["rapl"].success)
"""
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:  # root reads anything: drop the capability that lets it
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
               "--inh-caps=-dac_override,-dac_read_search"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "CVE-2020-8694" in out.stdout and "run the exporter as root" in out.stdout
    assert "UP [False, False, False, False] SUCCESS False" in out.stdout


def test_rapl_absent(tmp_path):
    with pytest.raises(SourceUnavailable, match="no RAPL"):
        RaplSource(tmp_path).open()


# -- Redfish -----------------------------------------------------------------------
@pytest.fixture
def bmc():
    api = FakeApi()
    yield api
    api.close()


def test_redfish_power_control(bmc):
    bmc.routes["/redfish/v1/Chassis"] = (200, {}, {"Members": [{"@odata.id": "/redfish/v1/Chassis/1"}]})
    bmc.routes["/redfish/v1/Chassis/1"] = (200, {}, {"Id": "1", "Name": "Computer System Chassis",
                                                    "Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"}})
    bmc.routes["/redfish/v1/Chassis/1/Power"] = (200, {}, {"PowerControl": [
        {"MemberId": "0", "Name": "System Power Control", "PowerConsumedWatts": 2488}]})
    src = RedfishSource(bmc.url, "admin", "pw")
    (node,) = src.open()
    assert node.kind == "node" and not node.fast_integration
    assert src.read(node, slow=False).power_mw == 2_488_000
    auth = bmc.hits("/redfish/v1/Chassis/1/Power")[0]["headers"]["Authorization"]
    assert auth.startswith("Basic ")


def test_redfish_environment_metrics_preferred(bmc):
    bmc.routes["/redfish/v1/Chassis"] = (200, {}, {"Members": [{"@odata.id": "/redfish/v1/Chassis/GPU_Board"}]})
    bmc.routes["/redfish/v1/Chassis/GPU_Board"] = (200, {}, {
        "EnvironmentMetrics": {"@odata.id": "/redfish/v1/Chassis/GPU_Board/EnvironmentMetrics"},
        "PowerSubsystem": {"@odata.id": "/redfish/v1/Chassis/GPU_Board/PowerSubsystem"}})
    bmc.routes["/redfish/v1/Chassis/GPU_Board/EnvironmentMetrics"] = (200, {}, {"PowerWatts": {"Reading": 5123.5}})
    src = RedfishSource(bmc.url)
    (node,) = src.open()
    assert src.read_power_mw(node) == 5_123_500
    bmc.routes["/redfish/v1/Chassis/GPU_Board/EnvironmentMetrics"] = (503, {}, {})
    from gpu_carbon_exporter.sources.base import DeviceLost
    with pytest.raises(DeviceLost, match="HTTP 503"):
        src.read_power_mw(node)


def test_redfish_tls_verification_is_on_by_default():
    assert RedfishSource("https://bmc.invalid").session.verify is True


# -- IPMI ----------------------------------------------------------------------------
DCMI_OK = """
    Instantaneous power reading:                   412 Watts
    Minimum during sampling period:                 95 Watts
    Maximum during sampling period:                608 Watts
    Average power reading over sample period:      399 Watts
    IPMI timestamp:                           Sun Nov 29 16:00:00 2026
    Sampling period:                          00000005 Seconds.
    Power reading state is:                   activated
"""


def fake_ipmitool(tmp_path, body: str) -> list[str]:
    tool = tmp_path / "ipmitool"
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return [str(tool)]


def test_ipmi_reading(tmp_path):
    (tmp_path / "out.txt").write_text(DCMI_OK)
    cmd = fake_ipmitool(tmp_path, f'[ "$1 $2 $3" = "dcmi power reading" ] || exit 9\ncat {tmp_path}/out.txt\n')
    src = IpmiSource(cmd)
    (node,) = src.open()
    assert src.read(node, slow=False).power_mw == 412_000


@pytest.mark.parametrize("body, fragment", [
    ('echo "Could not open device at /dev/ipmi0" >&2; exit 1\n', "exited 1: Could not open device"),
    ("sleep 5\n", "timed out"),
    ('echo "garbage"\n', "no 'Instantaneous power reading'"),
    ('echo "    Power reading state is:  deactivated"\n', "deactivated"),
])
def test_ipmi_errors(tmp_path, body, fragment):
    src = IpmiSource(fake_ipmitool(tmp_path, body), timeout_seconds=0.5)
    with pytest.raises(SourceUnavailable, match=fragment):
        src.open()


def test_ipmi_missing_binary():
    with pytest.raises(SourceUnavailable, match="install ipmitool"):
        IpmiSource(["/nonexistent/ipmitool"]).open()


def test_parse_dcmi():
    assert parse_dcmi(DCMI_OK) == 412.0


# -- estimated CPU ---------------------------------------------------------------------
def test_estimated_cpu_is_labelled_and_never_mixed():
    src = EstimatedCpuSource(200.0, idle_fraction=0.1, utilisation=lambda: 50.0)
    (dev,) = src.open()
    assert dev.method_without_counter == "estimated" and dict(dev.labels)["zone"] == "estimated"
    assert src.read(dev, slow=False).power_mw == 110_000


def test_rest_of_node_power(tmp_path, bmc):
    """Node (Redfish) minus GPUs (NVML) minus measured CPU (RAPL), when all three are known."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from gpu_carbon_exporter.collector import SnapshotCollector
    from gpu_carbon_exporter.sources.nvml import NvmlSource
    from conftest import sim_nvml

    clock = ManualClock()
    bmc.routes["/redfish/v1/Chassis"] = (200, {}, {"Members": [{"@odata.id": "/redfish/v1/Chassis/1"}]})
    bmc.routes["/redfish/v1/Chassis/1"] = (200, {}, {"Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"}})
    bmc.routes["/redfish/v1/Chassis/1/Power"] = (200, {}, {"PowerControl": [{"PowerConsumedWatts": 1500}]})
    sim = SysfsSimulator(tmp_path, rapl=Constant(300.0), rapl_packages=2, dram_share=0.1)
    gpus = sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": 2,
                                  "power": {"pattern": "constant", "watts": 400}}]}, clock)
    meter = Meter([NvmlSource(gpus), RaplSource(tmp_path, clock=clock), RedfishSource(bmc.url)],
                  StaticIntensity("Z", 300), clock=clock)
    meter.open()
    meter.sample()
    clock.advance(2.0)
    sim.update(clock.sim)
    meter.sample()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: meter.snapshot, clock=clock))
    text = generate_latest(reg).decode()
    # 1500 W node - 2 x 400 W GPUs - (300 W packages + 30 W DRAM) = 370 W
    line = next(x for x in text.splitlines() if x.startswith("gpu_carbon_node_rest_power_watts{"))
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(370.0, abs=1.0)
    assert 'gpu_carbon_node_power_watts{method="integrated",source="redfish"} 1500.0' in text


def test_nvml_missing_but_another_source_keeps_the_exporter_running(tmp_path):
    """No NVIDIA driver here: with RAPL available the exporter starts, and says NVML is down."""
    SysfsSimulator(tmp_path / "sys-root", rapl=Constant(80.0))
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"sources:\n  rapl: {{sysfs_root: {tmp_path / 'sys-root'}}}\n  jetson: {{enabled: false}}\n")
    out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "--config", str(cfg), "--once"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'gpu_carbon_collector_success{collector="nvml"} 0.0' in out.stdout
    assert 'gpu_carbon_cpu_up{domain="package",zone="intel-rapl:0"} 1.0' in out.stdout
    assert "--simulate" in out.stderr  # the NVML message still tells the operator what is missing


def test_board_total_and_its_rail_share_one_read_per_tick(tmp_path):
    SysfsSimulator(tmp_path, EdgeBoard("orin", Constant(20.0)))
    clock = ManualClock()
    src = JetsonSource(tmp_path, clock=clock)
    board, vdd_in, *_ = src.open()
    reads = []
    rail = src._rails[vdd_in.uuid]
    original = type(rail).power_mw
    type(rail).power_mw = lambda self: reads.append(self.name) or original(self)
    try:
        total = src.read_power_mw(board)
        assert total == src.read_power_mw(vdd_in) and total == pytest.approx(20_000, rel=0.001)  # mV x mA
        assert reads == ["VDD_IN"]  # the board total is the VDD_IN rail: read once this tick
        clock.advance(0.1)
        src.read_power_mw(board)
        assert reads == ["VDD_IN", "VDD_IN"]  # the next tick reads again
    finally:
        type(rail).power_mw = original


def test_a_bmc_answering_after_10_s_stalls_nothing_but_itself(bmc):
    """Redfish on its own poller: GPU samples go on; the node shows as that collector's failure."""
    import threading
    import time

    from gpu_carbon_exporter.sources.nvml import NvmlSource
    from gpu_carbon_exporter.sources.polled import PolledSource
    from conftest import sim_nvml

    stalled = threading.Event()

    def power(_req):
        if stalled.is_set():
            time.sleep(10)
        return 200, {}, {"PowerControl": [{"PowerConsumedWatts": 900}]}

    bmc.routes["/redfish/v1/Chassis"] = (200, {}, {"Members": [{"@odata.id": "/redfish/v1/Chassis/1"}]})
    bmc.routes["/redfish/v1/Chassis/1"] = (200, {}, {"Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"}})
    bmc.routes["/redfish/v1/Chassis/1/Power"] = power
    clock = ManualClock()
    gpus = sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant",
                                                                         "watts": 300}}]}, clock)
    node = PolledSource(RedfishSource(bmc.url, timeout_seconds=30), poll_interval_seconds=0.05, max_age_seconds=0.5)
    meter = Meter([NvmlSource(gpus), node], StaticIntensity("Z", 300), clock=clock)
    meter.open()
    meter.sample()
    assert meter.snapshot.devices[1].up
    stalled.set()
    deadline = time.monotonic() + 60  # a ceiling for a loaded machine: the stale reading is seen in ~0.5 s
    samples = 0
    while meter.snapshot.devices[1].up and time.monotonic() < deadline:
        clock.advance(1)
        meter.sample()
        samples += 1
        time.sleep(0.05)
    snap = meter.snapshot
    assert not snap.devices[1].up and not snap.collectors["redfish"].success
    assert snap.collectors["nvml"].success
    assert snap.devices[0].counters.energy_j == pytest.approx(300.0 * samples, abs=0.01)
    node.close()

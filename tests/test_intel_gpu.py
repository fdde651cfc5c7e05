"""Intel discrete GPUs through the xe and i915 hwmon (sources/intel_gpu.py), over the simulator's
driver-shaped trees (sim/intel.py), against the power patterns' exact integrals."""
import logging
import math
import os
import subprocess
import sys

import pytest

from gpu_carbon_exporter.attribution.fdinfo import DrmClientScanner
from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.intel import ENERGY_SHIFT, IntelGpuSimulator, pci_address
from gpu_carbon_exporter.sim.procfs import write_procfs
from gpu_carbon_exporter.sim.scenario import parse_scenario
from gpu_carbon_exporter.sources.base import DeviceLost, SourceUnavailable
from gpu_carbon_exporter.sources.intel_gpu import STUCK_S, EnergyCounter, IntelGpuSource

from conftest import ManualClock

MAX = "Intel Data Center GPU Max 1550"
B580 = "Intel Arc B580"
STEPS = {"pattern": "steps", "steps": [[0, 95], [7.5, 540], [21.25, 310], [40, 600], [52, 120]]}
# One reading is off the truth by at most one register count (2^-14 J) and one µJ (the print's floor):
# a difference of two readings by twice that.
RESOLUTION_J = 2 * (2.0**-ENERGY_SHIFT + 1e-6)


def node(tmp_path, devices, jobs=(), clock=None):
    """An Intel node: the simulated trees, its first read at t = 0, and the production source over them."""
    sc = parse_scenario({"devices": list(devices), "jobs": list(jobs)}, "<test>")
    proc = write_procfs(sc, tmp_path / "proc")
    (tmp_path / "proc").mkdir(exist_ok=True)  # a node's /proc, with or without jobs
    sim = IntelGpuSimulator(sc, tmp_path / "sys", proc)
    sim.update(clock.sim if clock else 0.0)
    clients = DrmClientScanner(proc, tmp_path / "sys", clock=clock) if clock else None
    return sc, sim, IntelGpuSource(tmp_path / "sys", clients=clients, read_processes=True, clock=clock or (lambda: 0.0))


@pytest.mark.parametrize("model, driver, channel, label", [
    (MAX, "xe", "energy2_input", "pkg"),  # the Max has only the package energy, on channel 2 under xe
    (B580, "xe", "energy1_input", "card"),  # Arc B: the card's energy, preferred over the package's
    (MAX, "i915", "energy1_input", "device"),  # i915: energy1 of the device, never the per-tile i915_gtN
])
def test_each_driver_layout_is_read_through_the_channel_of_the_whole_card(tmp_path, model, driver, channel, label):
    sc, sim, src = node(tmp_path, [{"model": model, "driver": driver, "power": {"pattern": "constant", "watts": 150}}])
    (dev,) = src.open()  # the BMC's VGA card0 (ASPEED) and the render nodes are passed by
    card = src._cards[dev.uuid]
    assert card.energy_file.resolve() == sim.energy_file(sc.devices[0]).resolve() and card.energy_file.name == channel
    assert card.label == label and card.driver == driver
    assert (dev.name, dev.vendor, dev.kind, dev.pci_bus_id) == (model, "intel", "gpu", pci_address(sc.devices[0]))
    assert dev.uuid == f"intel-{pci_address(sc.devices[0])}" and dev.has_energy_counter
    reading = src.read(dev, slow=True)
    assert reading.power_limit_mw == round(sc.devices[0].model.max_w * 1000)  # PL1, µW -> mW


def test_no_intel_gpu_is_source_unavailable(tmp_path):
    (tmp_path / "sys/class/drm").mkdir(parents=True)
    with pytest.raises(SourceUnavailable, match="no Intel discrete GPU"):
        IntelGpuSource(tmp_path).open()


@pytest.mark.parametrize("driver", ["xe", "i915"])
def test_energy_through_the_meter_is_the_pattern_integral_within_the_counter_resolution(tmp_path, driver):
    clock = ManualClock()
    sc, sim, src = node(tmp_path, [{"model": MAX, "driver": driver, "power": STEPS},
                                   {"model": B580, "power": {"pattern": "square", "period_s": 0.7, "duty": 0.4,
                                                             "high_w": 180, "low_w": 40}}], clock=clock)
    meter = Meter([src], StaticIntensity("Z", 300), clock=clock)
    meter.open()
    meter.sample()
    for _ in range(60):
        clock.advance(1.0)
        sim.update(clock.sim)
        meter.sample()
    for d, snap in zip(sc.devices, meter.snapshot.devices):
        truth = d.pattern.energy(60.0) - d.pattern.energy(0.0)
        assert snap.method == "counter" and snap.up
        assert abs(snap.counters.energy_j - truth) <= RESOLUTION_J, (d.model.name, snap.counters.energy_j, truth)
    # Power is the energy over the last second: GPU 0 drew 120 W over [59, 60].
    assert meter.snapshot.devices[0].reading.power_mw == pytest.approx(120_000, abs=1)


def test_the_register_wraps_every_seven_minutes_at_600_w_and_the_drivers_accumulator_loses_none(tmp_path):
    """2^32 counts of 2^-14 J are 262 kJ: 437 s at 600 W. Read every 10 s, as a sampler does, the
    driver's 64-bit accumulator counts across every wrap of its 32-bit register."""
    clock = ManualClock()
    sc, sim, src = node(tmp_path, [{"model": MAX, "power": {"pattern": "constant", "watts": 600}}], clock=clock)
    (dev,) = src.open()
    first = src.read(dev, slow=False).energy_mj
    for _ in range(150):  # 1500 s: three wraps
        clock.advance(10.0)
        sim.update(clock.sim)
        last = src.read(dev, slow=False).energy_mj
    assert abs((last - first) / 1000 - 600 * 1500) <= RESOLUTION_J


def test_a_counter_printed_signed_past_2_63_wraps_without_losing_a_joule(tmp_path, caplog):
    clock = ManualClock()
    near_top_mj = (2**63 - 1_500 * 10**6) // 1000  # 1.5 kJ below the top of a signed 64-bit µJ
    sc, sim, src = node(tmp_path, [{"model": MAX, "energy_offset_mj": near_top_mj,
                                    "power": {"pattern": "constant", "watts": 500}}], clock=clock)
    (dev,) = src.open()
    path = src._cards[dev.uuid].energy_file
    values, raw = [src.read(dev, slow=False).energy_mj], [int(path.read_text())]
    with caplog.at_level(logging.WARNING):
        for _ in range(6):  # 6 s at 500 W: past the top after 3
            clock.advance(1.0)
            sim.update(clock.sim)
            values.append(src.read(dev, slow=False).energy_mj)
            raw.append(int(path.read_text()))
    assert raw[0] > 0 and raw[-1] < 0  # the file did wrap, as hwmon prints it
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert abs((values[-1] - values[0]) / 1000 - 3000) <= RESOLUTION_J
    assert "wrapped" in caplog.text and str(path) in caplog.text


def test_a_driver_reload_restarts_the_file_and_the_counter_goes_on_from_where_it_was(tmp_path, caplog):
    clock = ManualClock()
    sc, sim, src = node(tmp_path, [{"model": MAX, "power": STEPS}], clock=clock)
    meter = Meter([src], StaticIntensity("Z", 300), clock=clock)
    meter.open()
    meter.sample()
    with caplog.at_level(logging.WARNING):
        for step in range(1, 41):
            clock.advance(1.0)
            sim.update(clock.sim)
            meter.sample()
            if step == 25:  # just after the sample at 25 s
                sim.reload_driver(sc.devices[0], clock.sim)
            if step == 32:  # again, and its hwmon comes back under a new number
                sim.reload_driver(sc.devices[0], clock.sim)
                sim.renumber_hwmon(sc.devices[0])
    energy = meter.snapshot.devices[0].counters.energy_j
    assert abs(energy - sc.devices[0].pattern.energy(40.0)) <= RESOLUTION_J  # nothing lost, nothing twice
    assert caplog.text.count("a reset") == 2 and "energy2_input" in caplog.text
    assert "hwmon5/energy2_input is gone; reading" in caplog.text and meter.snapshot.devices[0].up


def test_energy_counter_rules():
    """A garbage jump is not counted, a reset to an implausible value counts nothing, never backwards."""
    c = EnergyCounter(max_watts=1000.0)
    assert c.update(5_000_000, 0.0) == (5000.0, None)
    assert c.update(6_000_000, 1.0)[0] == 6000.0
    total, event = c.update(10**15, 2.0)  # 1 GJ in a second
    assert total == 6000.0 and "not counted" in event
    assert c.update(10**15 + 500_000, 3.0)[0] == 6500.0  # counting goes on from the new value
    total, event = c.update(10**12, 4.0)  # down, but to more than a second could have used: a reset, none counted
    assert total == 6500.0 and "a reset" in event
    assert c.update(10**12 + 1000, 5.0)[0] == 6501.0


def test_missing_hwmon_or_energy_files_leave_that_card_out(tmp_path, caplog):
    sc, sim, src = node(tmp_path, [{"model": MAX, "power": STEPS}] * 3)
    first, second, third = (sim.energy_file(d).parent for d in sc.devices)
    for f in first.iterdir():  # no hwmon at all (a VF, an integrated GPU): removed
        f.unlink()
    first.rmdir()
    for f in second.glob("energy*"):  # a hwmon with no energy channel
        f.unlink()
    with caplog.at_level(logging.INFO):
        (dev,) = src.open()
    assert dev.pci_bus_id == pci_address(sc.devices[2]) and dev.index == 0
    assert "no xe hwmon" in caplog.text and "card2/device/hwmon/hwmon8 has no energyN_input" in caplog.text


def test_a_file_gone_or_garbage_marks_that_card_down_naming_the_file(tmp_path, caplog):
    clock = ManualClock()
    sc, sim, src = node(tmp_path, [{"model": MAX, "power": STEPS}, {"model": MAX, "power": STEPS}], clock=clock)
    meter = Meter([src], StaticIntensity("Z", 300), clock=clock, lost_device_retry_seconds=5)
    meter.open()
    meter.sample()
    gone, garbage = (sim.energy_file(d) for d in sc.devices)
    clock.advance(1.0)
    sim.update(clock.sim)
    gone.unlink()
    garbage.write_text("not a number\n")
    with caplog.at_level(logging.ERROR):
        meter.sample()
    assert [d.up for d in meter.snapshot.devices] == [False, False]
    assert "card1/device/hwmon/hwmon5/energy2_input: [Errno 2] No such file" in caplog.text
    assert "card2/device/hwmon/hwmon8/energy2_input: invalid literal" in caplog.text
    with pytest.raises(DeviceLost, match="energy2_input"):
        src.read(meter.snapshot.devices[0].identity, slow=False)
    for _ in range(6):  # the files come back: counted across the gap, from the counter
        clock.advance(1.0)
        sim.update(clock.sim)
        meter.sample()
    for d, snap in zip(sc.devices, meter.snapshot.devices):
        assert snap.up and abs(snap.counters.energy_j - d.pattern.energy(7.0)) <= RESOLUTION_J


def test_zero_power_limit_falls_back_to_the_rating_and_a_counter_stuck_at_zero_is_named(tmp_path, caplog):
    clock = ManualClock()
    sc, sim, src = node(tmp_path, [{"model": MAX, "power": STEPS}], clock=clock)
    (dev,) = src.open()
    hw = sim.energy_file(sc.devices[0]).parent
    (hw / "power2_max").write_text("0\n")  # PL1 disabled
    (hw / "power2_rated_max").write_text("450000000\n")
    path = sim.energy_file(sc.devices[0])
    readings = []
    with caplog.at_level(logging.WARNING):
        for _ in range(int(STUCK_S) + 2):
            path.write_text("0\n")  # a counter that does not count
            readings.append(src.read(dev, slow=True))
            clock.advance(1.0)
    assert readings[0].power_limit_mw == 450_000
    assert all(r.energy_mj == 0 for r in readings) and readings[-1].power_mw == 0
    assert "card1/device/hwmon/hwmon5/energy2_input has not moved" in caplog.text and readings[-1].errors


def test_utilisation_is_the_busiest_engine_class_of_the_drm_clients(tmp_path):
    clock = ManualClock()
    jobs = [{"id": "1", "devices": [0], "share": 0.5}, {"id": "2", "devices": [0], "share": 0.25},
            {"id": "3", "devices": [1], "start_s": 5}]
    sc, sim, src = node(tmp_path, [{"model": MAX, "power": STEPS}, {"model": MAX, "driver": "i915", "power": STEPS}],
                        jobs, clock=clock)
    devices = src.open()
    for _ in range(10):
        clock.advance(1.0)
        sim.update(clock.sim)
        readings = [src.read(d, slow=False) for d in devices]
    # GPU 0: shares 0.5 and 0.25 of 0.75 in all, at least 1: its compute engines 75 % busy; GPU 1: 100 %.
    assert [r.gpu_util_pct for r in readings] == [75, 100]
    assert [sorted(p.pid for p in r.processes) for r in readings] == [[200000, 200100], [200200]]


def test_intel_max_scenario_runs_through_the_cli():
    out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "--simulate", "intel-max", "--once",
                          "--once.duration", "2.5"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.count('name="Intel Data Center GPU Max 1550"') == 4
    assert 'gpu_carbon_collector_success{collector="intel_gpu"} 1.0' in text
    assert ('gpu_carbon_gpu_energy_joules_total{gpu="3",method="counter",uuid="intel-0000:48:00.0",'
            'vendor="intel"}') in text
    assert 'gpu_carbon_job_energy_joules_total{job_id="7102",scheduler="slurm",view="active"}' in text
    assert 'gpu_carbon_gpu_attribution_info{gpu="2",split="sm"' in text  # 7102 and 7103 share GPU 2 by engine time


def test_a_mixed_node_gives_nvml_its_nvidia_gpus_and_the_intel_source_the_others(tmp_path):
    from gpu_carbon_exporter.sim.hardware import simulated_hardware

    nvidia = {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 300}}
    sc = parse_scenario({"devices": [{"model": MAX, "power": STEPS}, nvidia],
                         "jobs": [{"id": "a", "devices": [1]}, {"id": "b", "devices": [0]}]}, "<test>")
    hw = simulated_hardware(sc, lambda: 5.0)
    assert list(hw.sections) == ["nvml", "intel_gpu"] and hw.proc_root and hw.sysfs_root
    nv = hw.libraries["nvml"]
    nv.nvmlInit()
    (h100,) = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
    assert nv.nvmlDeviceGetName(h100) == "NVIDIA H100 80GB HBM3"
    assert [p.pid for p in nv.nvmlDeviceGetComputeRunningProcesses(h100)] == [200000]  # job a, not b
    src = IntelGpuSource(hw.sysfs_root, clients=DrmClientScanner(hw.proc_root, hw.sysfs_root))
    (dev,) = src.open()
    # One bus, one address each: the Max is the scenario's device 0, the H100 its device 1.
    assert (dev.name, dev.pci_bus_id) == (MAX, "0000:18:00.0")
    assert nv.nvmlDeviceGetPciInfo(h100).busId == "00000000:28:00.0"
    assert [p.pid for p in src.read(dev, slow=True).processes or []] == []  # read_processes off: none asked
    src.read_processes = True
    assert [p.pid for p in src.read(dev, slow=True).processes] == [200100]  # job b


@pytest.mark.parametrize("device, message", [
    ({"model": MAX, "driver": "amdgpu"}, "driver: must be xe or i915"),
    ({"model": "NVIDIA H100 80GB HBM3", "driver": "xe"}, "driver: must be nvidia"),
    ({"model": MAX, "mig_instances": 2}, "mig_instances: MIG is NVIDIA's"),
    ({"model": "AMD Instinct MI300X", "driver": "xe"}, "driver: must be amdgpu"),
    ({"model": "Intel Arc B770", "vendor": "intel", "idle_w": 20, "max_w": 225}, "Intel cards are the known models"),
])
def test_scenario_drivers_are_checked(device, message):
    from gpu_carbon_exporter.sim.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=message):
        parse_scenario({"devices": [{**device, "power": STEPS}]}, "<test>")


def test_a_node_of_three_vendors_reads_each_gpu_once_through_its_own_source():
    """NVIDIA's through the simulated NVML, AMD's through the amdgpu tree, Intel's through the xe/i915
    tree and its DRM clients: every scenario GPU found once, with its vendor, its job on the Intel one."""
    from gpu_carbon_exporter.config import parse_config
    from gpu_carbon_exporter.sim.hardware import simulated_hardware
    from gpu_carbon_exporter.startup import _simulated_sources

    constant = {"pattern": "constant", "watts": 200}
    sc = parse_scenario({"devices": [{"model": "NVIDIA H100 80GB HBM3", "power": constant},
                                     {"model": "AMD Instinct MI300X", "power": constant},
                                     {"model": MAX, "driver": "i915", "power": constant}],
                         "jobs": [{"id": "c", "devices": [2]}]}, "<test>")
    hw = simulated_hardware(sc, lambda: 5.0)
    assert list(hw.sections) == ["nvml", "amdgpu", "intel_gpu"]
    sources = _simulated_sources(parse_config({}, "<test>"), hw, read_processes=True)
    found = {s.name: (s, s.open()) for s in sources if s.name in hw.sections}
    assert {name: [d.vendor for d in devs] for name, (_, devs) in found.items()} == {
        "nvml": ["nvidia"], "amdgpu": ["amd"], "intel_gpu": ["intel"]}
    assert [d.uuid for _, devs in list(found.values())[:2] for d in devs] == [d.uuid for d in sc.devices[:2]]
    src, (intel,) = found["intel_gpu"]
    assert intel.pci_bus_id == pci_address(sc.devices[2])
    assert [p.pid for p in src.read(intel, slow=True).processes] == [200000]  # job c (sim.trace.job_pid(0, 0))


def test_the_intel_max_scenario_through_the_production_sources_is_held_to_its_integrals(tmp_path):
    """The built-in scenario from 15 s into its cycle for 60 s (job 7104 starts at 20 s): every GPU's
    energy within the counter's resolution of its pattern's integral, the jobs' energy conserved
    exactly, and GPU 2's shared active energy split 70/30 as its clients' engine time."""
    from gpu_carbon_exporter.sim.scenario import load_scenario
    from gpu_carbon_exporter.startup import build_attribution
    from gpu_carbon_exporter.config import parse_config

    clock, start = ManualClock(), 15.0
    sc = load_scenario("intel-max")
    proc = write_procfs(sc, tmp_path / "proc")
    sim = IntelGpuSimulator(sc, tmp_path / "sys", proc)
    sim.update(start)
    acfg = parse_config({"attribution": {"mappers": "slurm", "slurm_environ": True,
                                         "idle_watts": {MAX: 95.0}}})["attribution"]
    src = IntelGpuSource(tmp_path / "sys", clients=DrmClientScanner(proc, tmp_path / "sys", clock=clock),
                         read_processes=True, clock=clock)
    meter = Meter([src], StaticIntensity("Z", 300.0), clock=clock, attribution=build_attribution(acfg, proc_root=proc))
    meter.open()
    meter.sample()
    for _ in range(60):
        clock.advance(1.0)
        sim.update(start + clock.sim)
        meter.sample()
    snap = meter.snapshot
    for d, dev in zip(sc.devices, snap.devices):
        assert abs(dev.counters.energy_j - (d.pattern.energy(start + 60) - d.pattern.energy(start))) <= RESOLUTION_J
    jobs = {j.job.id: j for j in snap.attribution.jobs}
    assert set(jobs) == {"7101", "7102", "7103", "7104"} and jobs["7101"].gpus == {("intel", "0"), ("intel", "1")}
    buckets = snap.attribution.gpus.values()
    total = math.fsum(d.counters.energy_j for d in snap.devices)
    assert math.fsum(j.energy_allocated_j for j in jobs.values()) + math.fsum(b.unallocated_j for b in buckets) \
        == pytest.approx(total, rel=1e-12)
    assert math.fsum(j.energy_active_j for j in jobs.values()) + \
        math.fsum(b.idle_j + b.unattributed_j for b in buckets) == pytest.approx(total, rel=1e-12)
    assert jobs["7102"].energy_active_j / jobs["7103"].energy_active_j == pytest.approx(0.7 / 0.3, rel=1e-6)


def test_the_generic_hwmon_source_leaves_intel_gpus_to_their_own_source(tmp_path):
    """xe, i915 and i915's per-tile hwmons are on its default deny list: a card is never counted twice."""
    from gpu_carbon_exporter.sources.hwmon import HwmonSource

    node(tmp_path, [{"model": MAX, "power": STEPS}, {"model": MAX, "driver": "i915", "power": STEPS}])
    assert len(list((tmp_path / "sys/sys/class/hwmon").iterdir())) == 4  # xe, i915, i915_gt0, i915_gt1
    with pytest.raises(SourceUnavailable):
        HwmonSource(tmp_path / "sys").open()
    found = HwmonSource(tmp_path / "sys", allow=("xe", "i915")).open()  # what the deny list keeps out
    assert sorted(d.name for d in found) == ["i915 energy1", "xe pkg"]

"""The meter: counters against ground truth, restarts, driver reloads, lost GPUs."""

import pytest

from gpu_carbon_exporter.carbon.static import StaticIntensity, TimelineIntensity
from gpu_carbon_exporter.meter import Embodied, Meter
from gpu_carbon_exporter.sim.scenario import GroundTruth
from gpu_carbon_exporter.sources.nvml import NvmlSource
from gpu_carbon_exporter.state import StateStore, read_file

from conftest import ManualClock, sim_nvml

SCENARIO = {
    "zone": "Z", "pue": 1.2,
    "intensity": {"Z": [[0, 300], [7.3, 120], [13.1, 450]]},
    "devices": [
        {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "square", "period_s": 0.01, "duty": 0.3,
                                                     "high_w": 690, "low_w": 120}},
        {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "bursts", "seed": 5, "low_w": 90,
                                                     "high_w": 600, "mean_on_s": 0.3, "mean_off_s": 0.7}},
        {"model": "Tesla P100-PCIE-16GB", "power": {"pattern": "steps", "steps": [[0, 60], [4, 240], [12, 90]]}},
    ],
}


def make(clock, tmp_path=None, data=SCENARIO, **kw):
    nv = sim_nvml(data, clock)
    sc = nv.scenario
    intensity = TimelineIntensity(sc.zone, sc.intensity[sc.zone], lambda: clock.start) \
        if sc.intensity else StaticIntensity("Z", 200)
    state = StateStore(tmp_path / "state.json") if tmp_path else None
    meter = Meter([NvmlSource(nv)], intensity, pue=sc.pue, state=state, clock=clock, **kw)
    return meter, nv


def run(meter, clock, seconds, step=1.0, integrate_hz=10):
    """Drive the meter like its thread would: full samples each ``step``, integration ticks between."""
    ticks = int(round(step * integrate_hz))
    for _ in range(int(round(seconds / step))):
        for _ in range(ticks - 1):
            clock.advance(step / ticks)
            meter.integrate()
        clock.advance(step / ticks)
        meter.sample()


def test_counter_energy_and_emissions_match_ground_truth(clock):
    meter, nv = make(clock)
    meter.open()
    meter.sample()
    run(meter, clock, 20)
    gt = GroundTruth(nv.scenario)
    snap = meter.snapshot
    for i in (0, 1):
        c = snap.devices[i].counters
        assert snap.devices[i].method == "counter"
        # the hardware counter is floored to whole mJ: error < 1 mJ per read
        assert c.energy_j == pytest.approx(gt.device_energy_j(i, 0, 20), abs=2e-3)
        # intensity is split exactly at step times; power within a 1-s sample is taken as uniform
        assert c.emissions_g == pytest.approx(gt.device_emissions_g(i, 0, 20), rel=5e-3)


def test_emissions_exact_for_constant_power_under_stepped_intensity(clock):
    data = {**SCENARIO, "devices": [{"model": "NVIDIA H100 80GB HBM3",
                                     "power": {"pattern": "constant", "watts": 500}}]}
    meter, nv = make(clock, data=data)
    meter.open()
    meter.sample()
    run(meter, clock, 20)
    want = GroundTruth(nv.scenario).device_emissions_g(0, 0, 20)
    assert meter.snapshot.devices[0].counters.emissions_g == pytest.approx(want, rel=1e-5)


def test_integrated_energy_for_pre_volta_within_half_percent(clock):
    meter, nv = make(clock)
    meter.open()
    meter.sample()
    run(meter, clock, 20)
    d = meter.snapshot.devices[2]
    assert d.method == "integrated"
    truth = GroundTruth(nv.scenario).device_energy_j(2, 0, 20)
    # instant readings at 10 Hz of a step trace: each step edge costs at most one 0.1-s interval
    assert d.counters.energy_j == pytest.approx(truth, rel=5e-3)


def test_counters_survive_restart_and_count_downtime(clock, tmp_path):
    meter, nv = make(clock, tmp_path)
    meter.open()
    meter.sample()
    run(meter, clock, 5)
    meter.stop()
    saved = read_file(tmp_path / "state.json")
    assert saved["format"] == 2 and len(saved["devices"]) == 3
    clock.advance(30)  # exporter down for 30 s; the GPU kept working
    meter2, nv2 = make(clock, tmp_path)
    meter2.open()
    meter2.sample()
    gt = GroundTruth(nv2.scenario)
    assert meter2.snapshot.devices[0].counters.energy_j == pytest.approx(gt.device_energy_j(0, 0, 35), abs=5e-3)


def test_driver_reload_never_makes_counters_go_backwards(clock):
    meter, nv = make(clock)
    meter.open()
    meter.sample()
    run(meter, clock, 5)
    before = meter.snapshot.devices[0].counters.energy_j
    nv.reload_driver(0)  # raw counter restarts at 0
    clock.advance(1)
    meter.sample()
    after = meter.snapshot.devices[0].counters.energy_j
    gt = GroundTruth(nv.scenario)
    assert after > before
    assert after == pytest.approx(gt.device_energy_j(0, 0, 6), abs=5e-3)


@pytest.mark.parametrize("damage", [
    lambda raw: raw[:-20],  # truncated
    lambda raw: raw.replace(b'"energy_j":', b'"energy_J":', 1),  # a changed byte: checksum mismatch
    lambda raw: b'{"saved_at": 1, "devices": {',  # a damaged format-1 (plain JSON) file
])
def test_damaged_state_is_set_aside_not_fatal(clock, tmp_path, caplog, damage):
    meter, _ = make(clock, tmp_path)
    meter.open()
    meter.sample()
    meter.stop()
    path = tmp_path / "state.json"
    for live in tmp_path.glob("state.json.live-*"):
        live.unlink()
    path.write_bytes(damage(path.read_bytes()))
    meter, _ = make(clock, tmp_path)
    meter.open()
    meter.sample()
    assert meter.snapshot.devices[0].counters.energy_j == 0
    assert list(tmp_path.glob("state.json.corrupt-*"))
    assert "damaged" in caplog.text


def test_lost_gpu_goes_down_keeps_counters_and_recovers(clock):
    meter, nv = make(clock, lost_device_retry_seconds=3)
    meter.open()
    meter.sample()
    run(meter, clock, 3)
    kept = meter.snapshot.devices[0].counters.energy_j
    nv.lost.add(0)
    run(meter, clock, 2)
    snap = meter.snapshot
    assert not snap.devices[0].up and snap.devices[1].up
    assert snap.devices[0].counters.energy_j == kept
    assert snap.collectors["nvml"].success  # the source still works for the other GPUs
    nv.lost.clear()
    run(meter, clock, 4)
    assert meter.snapshot.devices[0].up
    # energy used while lost is recovered from the hardware counter
    gt = GroundTruth(nv.scenario)
    assert meter.snapshot.devices[0].counters.energy_j == pytest.approx(gt.device_energy_j(0, 0, 9), abs=5e-3)


def test_embodied_and_water_counters(clock):
    data = {"devices": [{"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 360}}]}
    meter, _ = make(clock, data=data, embodied=Embodied(kg_co2e_per_device=150, lifetime_years=5))
    meter.wue = 2.0
    meter.open()
    meter.sample()
    run(meter, clock, 10)
    c = meter.snapshot.devices[0].counters
    assert c.embodied_g == pytest.approx(150_000 / (5 * 365.25 * 86400) * 10, rel=1e-6)  # float clock steps
    assert c.water_l == pytest.approx(360 * 10 / 3.6e6 * 2.0, rel=1e-6)


def test_counters_are_monotonic_over_a_long_bursty_run():
    clock = ManualClock()
    meter, _ = make(clock)
    meter.open()
    meter.sample()
    last = [0.0] * 3
    for _ in range(60):
        run(meter, clock, 1)
        now = [d.counters.energy_j for d in meter.snapshot.devices]
        assert all(b >= a for a, b in zip(last, now))
        last = now


def test_an_unexpected_source_error_degrades_that_source_only(clock):
    """A bug-like failure (not an NVML error) in one source: its sample fails, the rest report."""
    from gpu_carbon_exporter.sources.base import DeviceIdentity, DeviceSource

    class Broken(DeviceSource):
        name = "broken"

        def open(self):
            return [DeviceIdentity(0, "broken-0", "x", kind="node", has_energy_counter=False,
                                   labels=(("source", "broken"),))]

        def read(self, device, *, slow):
            raise RuntimeError("parser bug")

        def read_power_mw(self, device):
            raise RuntimeError("parser bug")

    nv = sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 300}}]},
                  clock)
    meter = Meter([NvmlSource(nv), Broken()], StaticIntensity("Z", 100), clock=clock)
    meter.open()
    meter.sample()
    clock.advance(1)
    meter.sample()
    snap = meter.snapshot
    assert not snap.collectors["broken"].success and snap.collectors["nvml"].success
    assert snap.devices[0].counters.energy_j == pytest.approx(300.0, abs=0.01)


@pytest.mark.parametrize("power_fields", [True, False])
def test_gpus_without_counter_integrate_the_average_field_on_bursty_loads(power_fields):
    """A100-like sensor (25-ms window every 100 ms): the 1-s average field covers every second;
    the instantaneous reading misses most of a short burst."""
    clock = ManualClock()
    data = {"devices": [{"model": "NVIDIA A100-SXM4-80GB", "energy_counter": False, "power_fields": power_fields,
                         "power": {"pattern": "square", "period_s": p, "duty": 0.1, "high_w": 400, "low_w": 60}}
                        for p in (0.2, 0.7, 2.1, 3.7)]}
    meter, nv = make(clock, data=data)
    meter.open()
    meter.sample()
    run(meter, clock, 120, step=1.0)
    truth = GroundTruth(nv.scenario)
    errors = [(d.counters.energy_j - truth.device_energy_j(i, 0, 120)) / truth.device_energy_j(i, 0, 120)
              for i, d in enumerate(meter.snapshot.devices)]
    if power_fields:
        assert meter.snapshot.devices[0].method == "integrated_average"
        assert max(abs(e) for e in errors) < 0.015
    else:
        assert meter.snapshot.devices[0].method == "integrated"
        assert max(abs(e) for e in errors) > 0.1  # why the average field matters

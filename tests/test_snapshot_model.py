"""The snapshot carries every figure the collector renders: the accounting computes, the collector renders."""
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from gpu_carbon_exporter.collector import SnapshotCollector
from gpu_carbon_exporter.snapshot import Counters, JobCounters, shallow_copy
from gpu_carbon_exporter.state import StateStore

from test_attribution_meter import make, run


def test_job_water_is_accounted_in_the_snapshot(clock):
    meter, _ = make(clock)
    meter.wue = 1.8
    meter.open()
    run(meter, clock, 20)
    jobs = meter.snapshot.attribution.jobs
    assert jobs and all(jc.water_l == jc.energy_allocated_j / 3.6e6 * 1.8 for jc in jobs)
    assert meter.snapshot.wue_liters_per_kwh == 1.8


def test_held_snapshot_still_renders_job_water(clock, tmp_path, monkeypatch):
    """Checkpoints failing from the first sample: the exposed job counters are those restored at
    start-up, and their water is there too (the collector never computes it)."""
    meter, _ = make(clock, state=StateStore(tmp_path / "state.json"))
    meter.wue = 1.8
    meter.open()
    run(meter, clock, 10)  # jobs exist and are saved
    meter.stop()
    meter, _ = make(clock, state=StateStore(tmp_path / "state.json"))
    meter.wue = 1.8
    meter.open()
    monkeypatch.setattr(meter.persistence.state, "checkpoint", lambda data: (_ for _ in ()).throw(OSError("full")))
    monkeypatch.setattr(meter.persistence, "persist_interval_seconds", 1e9)
    run(meter, clock, 3)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: meter.snapshot, water=True, clock=clock))
    text = generate_latest(reg).decode()
    assert "gpu_carbon_job_water_liters_total{" in text
    assert 'gpu_carbon_scrape_errors_total{section="jobs"} 0.0' in text


def test_health_is_the_meters_staleness_rule(clock):
    meter, _ = make(clock)
    meter.open()
    meter.sample()
    assert meter.health() == (True, "ok")
    clock.advance(4.9)
    assert meter.health()[0]  # at least 5 s, or three intervals
    clock.advance(0.2)
    ok, text = meter.health()
    assert not ok and text.startswith("stale: last sample 5.1s ago")


def test_snapshot_copies_are_independent():
    c = Counters(energy_j=1.0)
    copy = shallow_copy(c)
    c.energy_j += 1
    assert copy.energy_j == 1.0 and copy == Counters(energy_j=1.0) and type(copy) is Counters
    assert JobCounters.__dataclass_fields__["water_l"].default is None


@pytest.mark.parametrize("name", ["Counters", "DeviceSnapshot", "CollectorStatus", "Snapshot", "Embodied"])
def test_the_meter_still_exports_its_model(name):
    import gpu_carbon_exporter.meter as meter

    assert hasattr(meter, name)

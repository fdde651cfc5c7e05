"""Scenario parsing, validation errors and exact ground truth."""
import pytest

from gpu_carbon_exporter.sim.scenario import (GroundTruth, ScenarioError, load_scenario,
                                              parse_scenario)

BASE = {"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": 2,
                     "power": {"pattern": "constant", "watts": 360}}]}


def test_demo_is_eight_h100_with_jobs_and_stepped_intensity():
    sc = load_scenario(None)
    assert len(sc.devices) == 8 and all("H100" in d.model.name for d in sc.devices)
    assert len(sc.jobs) >= 3 and sc.pue > 1
    assert len({v for _, v in sc.intensity[sc.zone].points}) > 1


def test_ground_truth_emissions_split_at_intensity_steps():
    sc = parse_scenario({**BASE, "zone": "Z", "pue": 1.5, "intensity": {"Z": [[0, 100], [10, 400]]}})
    gt = GroundTruth(sc)
    # 360 W for 5 s at 100 g/kWh, then 15 s at 400 g/kWh, times PUE 1.5
    want = (360 * 5 * 100 + 360 * 15 * 400) / 3.6e6 * 1.5
    assert gt.device_emissions_g(0, 5, 25) == pytest.approx(want, rel=1e-12)


def test_job_ground_truth_clips_to_job_and_applies_share():
    data = {**BASE, "jobs": [{"id": 7, "start_s": 10, "end_s": 20, "devices": [0, 1], "share": 0.5}]}
    sc = parse_scenario(data)
    assert GroundTruth(sc).job_energy_j(sc.jobs[0], 0, 15) == pytest.approx(2 * 360 * 5 * 0.5)
    assert sc.jobs[0].id == "7"


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["devices"][0]["power"].update(pattern="sine"), "devices[0].power.pattern: unknown pattern"),
    (lambda d: d["devices"][0].update(colour="red"), "devices[0]: unknown key(s) colour"),
    (lambda d: d["devices"][0]["power"].update(watts="lots"), "devices[0].power.watts: expected float"),
    (lambda d: d.update(pue=0.5), "pue: must be >= 1.0"),
    (lambda d: d.update(jobs=[{"id": "a", "devices": [5]}]), "jobs[0].devices: device indices"),
    (lambda d: d.update(zone="X", intensity={"Y": [[0, 1]]}), "zone: zone 'X' has no intensity"),
])
def test_bad_scenarios_name_file_key_and_reason(mutate, fragment):
    import copy
    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "my.yaml")
    assert str(err.value).startswith("my.yaml: ") and fragment in str(err.value)


def test_missing_scenario_file_is_a_clear_error(tmp_path):
    with pytest.raises(ScenarioError, match="nope.yaml: no such scenario file, and not a built-in scenario "
                                            r"\(demo, jobs-mix"):
        load_scenario(tmp_path / "nope.yaml")


def test_demo_tells_the_same_story_three_cycles_later():
    """Power, jobs and intensity share the demo's 30-min cycle: at t = 3 cycles job 4711 still
    trains on GPUs 0-3 (all their energy is its), and intensity still steps every 5 minutes."""
    from gpu_carbon_exporter.carbon.static import TimelineIntensity
    from gpu_carbon_exporter.startup import build_attribution
    from gpu_carbon_exporter.config import parse_config
    from gpu_carbon_exporter.meter import Meter
    from gpu_carbon_exporter.sim.nvml import SimulatedNvml
    from gpu_carbon_exporter.sim.procfs import write_procfs
    from gpu_carbon_exporter.sim.scenario import GroundTruth, load_scenario
    from gpu_carbon_exporter.sources.nvml import NvmlSource

    from conftest import ManualClock

    sc = load_scenario("demo")
    base = 3 * sc.cycle_s
    assert [sc.intensity["DEU"].value_at(base + s) for s in (0, 300, 600, 900, 1200, 1500)] == \
        [380, 310, 420, 360, 290, 400]
    job = next(j for j in sc.jobs if j.id == "4711")
    assert job.active(base + 100) and not job.active(base + 1600) and job.active(base + 1800 + 60)
    clock = ManualClock()
    nv = SimulatedNvml(sc, lambda: base + 100 + clock.sim)
    acfg = parse_config({"attribution": {"mappers": "slurm", "slurm_environ": True}})["attribution"]
    acfg = {**acfg, "idle_watts": {d.model.name: d.model.idle_w for d in sc.devices}}
    meter = Meter([NvmlSource(nv, read_processes=True)], TimelineIntensity("DEU", sc.intensity["DEU"],
                                                                           lambda: clock.start - base - 100),
                  clock=clock, attribution=build_attribution(acfg, proc_root=write_procfs(sc)))
    meter.open()
    meter.sample()
    for _ in range(30):
        clock.advance(1)
        meter.sample()
    snap = meter.snapshot
    truth = GroundTruth(sc)
    got = next(j for j in snap.attribution.jobs if j.job.id == "4711")
    assert got.energy_allocated_j == pytest.approx(truth.job_allocated_j(job, base + 100, base + 130), rel=1e-6)
    assert snap.attribution.gpus[snap.devices[0].identity.uuid].unallocated_j == 0.0
    assert snap.intensity.g_per_kwh == 380  # t = 3 cycles + 130 s

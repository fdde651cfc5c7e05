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


def test_job_ground_truth_clips_to_job_and_a_lone_job_has_its_whole_gpu():
    """`share` weighs a job against its GPU's other holders: alone, whatever its share, the job
    holds the GPU exclusively and the exporter gives it all the GPU's energy."""
    data = {**BASE, "jobs": [{"id": 7, "start_s": 10, "end_s": 20, "devices": [0, 1], "share": 0.5}]}
    sc = parse_scenario(data)
    assert GroundTruth(sc).job_energy_j(sc.jobs[0], 0, 15) == pytest.approx(2 * 360 * 5)
    assert sc.jobs[0].id == "7"


# One H100 (idle 70 W) at a constant 400 W, and the intensity, for the shared-GPU cases below.
SHARED = {"devices": [{"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 400}}],
          "zone": "Z", "pue": 1.2, "intensity": {"Z": [[0, 100], [60, 300]]}}


def by_hand(watts: float, idle_w: float, seconds: float, shares: list[float], mine: float) -> float:
    """docs/scenario.md's formula for one stretch of constant holders:
    (E - I) x share / sum(shares) + I / holders, with I = min(idle_w x seconds, E)."""
    energy = watts * seconds
    idle = min(idle_w * seconds, energy)
    return (energy - idle) * mine / sum(shares) + idle / len(shares)


def test_shared_gpu_truth_is_the_documented_formula_computed_by_hand():
    """The issue's case: a GPU at 400 W with 70 W idle shared 0.75/0.25 for 100 s. Active power
    (330 W) goes by share, idle power (70 W) equally: 282.5 W and 117.5 W, not 300 W and 100 W.
    Job b joins at 40 s, so job a also has a stretch alone (all 400 W)."""
    sc = parse_scenario({**SHARED, "jobs": [{"id": "a", "start_s": 0, "end_s": 100, "devices": [0], "share": 0.75},
                                            {"id": "b", "start_s": 40, "end_s": 100, "devices": [0],
                                             "share": 0.25}]})
    truth, (a, b) = GroundTruth(sc), sc.jobs
    want_a = by_hand(400, 70, 40, [0.75], 0.75) + by_hand(400, 70, 60, [0.75, 0.25], 0.75)
    want_b = by_hand(400, 70, 60, [0.75, 0.25], 0.25)
    assert (want_a, want_b) == pytest.approx((400 * 40 + 282.5 * 60, 117.5 * 60), rel=1e-12)
    assert truth.job_energy_j(a, 0, 100) == pytest.approx(want_a, rel=1e-12)
    assert truth.job_energy_j(b, 0, 100) == pytest.approx(want_b, rel=1e-12)
    assert truth.job_allocated_j(b, 0, 100) == truth.job_energy_j(b, 0, 100)  # one meaning, two names
    # every joule is a job's: the parts add up to the GPU's energy
    assert truth.job_energy_j(a, 0, 100) + truth.job_energy_j(b, 0, 100) == pytest.approx(400 * 100, rel=1e-12)
    # emissions: the same split of each stretch of constant intensity (100 g/kWh to 60 s, then 300), x PUE
    want_g = (by_hand(400, 70, 20, [0.75, 0.25], 0.25) * 100 + by_hand(400, 70, 40, [0.75, 0.25], 0.25) * 300) \
        / 3.6e6 * 1.2
    assert truth.job_emissions_g(b, 0, 100) == pytest.approx(want_g, rel=1e-12)
    assert truth.job_allocated_g(b, 0, 100) == truth.job_emissions_g(b, 0, 100)


# Two jobs on MIG instance 0, one on instance 1.
MIG_SHARED = [{"id": "a", "devices": [0], "mig_instance": 0, "share": 0.75},
              {"id": "b", "devices": [0], "mig_instance": 0, "share": 0.25},
              {"id": "c", "devices": [0], "mig_instance": 1, "share": 0.5}]


def test_shared_mig_instance_truth_is_the_documented_formula():
    """On MIG the GPU's energy and idle are cut equally among its instances first; two jobs on one
    instance then split it like a shared GPU (the truth used to give each the whole instance)."""
    sc = parse_scenario({**SHARED, "devices": [{**SHARED["devices"][0], "mig_instances": 2}],
                         "jobs": [{**j, "end_s": 100} for j in MIG_SHARED]})
    truth, (a, b, c) = GroundTruth(sc), sc.jobs
    assert truth.job_energy_j(a, 0, 100) == pytest.approx(by_hand(200, 35, 100, [0.75, 0.25], 0.75), rel=1e-12)
    assert truth.job_energy_j(b, 0, 100) == pytest.approx(by_hand(200, 35, 100, [0.75, 0.25], 0.25), rel=1e-12)
    assert truth.job_energy_j(c, 0, 100) == pytest.approx(200 * 100, rel=1e-12)


@pytest.mark.parametrize("mig, jobs, want", [
    (0, [{"id": "a", "devices": [0], "share": 0.75}, {"id": "b", "devices": [0], "share": 0.25}],
     {"a": by_hand(400, 70, 100, [0.75, 0.25], 0.75), "b": by_hand(400, 70, 100, [0.75, 0.25], 0.25)}),
    (2, MIG_SHARED, {"a": by_hand(200, 35, 100, [0.75, 0.25], 0.75), "b": by_hand(200, 35, 100, [0.75, 0.25], 0.25),
                     "c": 200 * 100})], ids=["shared-gpu", "shared-mig-instance"])
def test_the_exporter_attributes_a_shared_gpu_as_the_documented_truth(mig, jobs, want):
    """The production path (simulated NVML processes and SM utilisation, /proc with Slurm cgroups,
    the attribution engine) agrees with the hand-computed truth of the 0.75/0.25 GPU, and of a MIG
    instance shared 0.75/0.25 beside an instance with one job."""
    from conftest import ManualClock

    from gpu_carbon_exporter.carbon.static import StaticIntensity
    from gpu_carbon_exporter.config import parse_config
    from gpu_carbon_exporter.meter import Meter
    from gpu_carbon_exporter.sim.nvml import SimulatedNvml
    from gpu_carbon_exporter.sim.procfs import write_procfs
    from gpu_carbon_exporter.sources.nvml import NvmlSource
    from gpu_carbon_exporter.startup import build_attribution

    sc = parse_scenario({**SHARED, "devices": [{**SHARED["devices"][0], "mig_instances": mig}], "jobs": jobs})
    clock = ManualClock()
    acfg = parse_config({"attribution": {"mappers": "slurm"}})["attribution"]
    acfg = {**acfg, "idle_watts": {"NVIDIA H100 80GB HBM3": 70.0}}  # the idle power the truth assumes
    meter = Meter([NvmlSource(SimulatedNvml(sc, lambda: clock.sim), read_processes=True)],
                  StaticIntensity("Z", 100.0), clock=clock,
                  attribution=build_attribution(acfg, proc_root=write_procfs(sc)))
    meter.open()
    meter.sample()
    for _ in range(100):
        clock.advance(1)
        meter.sample()
    got = {j.job.id: j.energy_allocated_j for j in meter.snapshot.attribution.jobs}
    assert got == pytest.approx(want, rel=1e-6)
    truth = GroundTruth(sc)
    assert {j.id: truth.job_energy_j(j, 0, 100) for j in sc.jobs} == pytest.approx(want, rel=1e-12)


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

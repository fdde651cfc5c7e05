"""Per-job energy through the meter over the simulated fleet, against the scenario's ground truth."""
import math

import pytest

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.startup import build_attribution
from gpu_carbon_exporter.config import parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.procfs import write_procfs
from gpu_carbon_exporter.sim.scenario import GroundTruth
from gpu_carbon_exporter.sources.nvml import NvmlSource
from gpu_carbon_exporter.state import StateStore

from conftest import sim_nvml

H100 = "NVIDIA H100 80GB HBM3"
SCENARIO = {
    "zone": "Z", "pue": 1.2, "intensity": {"Z": [[0, 300], [25, 150]]},
    "devices": [
        {"model": H100, "power": {"pattern": "steps", "steps": [[0, 70], [5, 600], [40, 80], [45, 500], [55, 72]]}},
        {"model": H100, "power": {"pattern": "square", "period_s": 0.01, "duty": 0.5, "high_w": 650, "low_w": 300}},
        {"model": H100, "mig_instances": 2, "power": {"pattern": "constant", "watts": 420}},
        {"model": H100, "power": {"pattern": "constant", "watts": 250}},
    ],
    "jobs": [
        {"id": "101", "user": "ann", "team": "nlp", "start_s": 5, "end_s": 40, "devices": [0]},
        {"id": "102", "user": "bob", "team": "cv", "start_s": 0, "end_s": 60, "devices": [1], "share": 0.75},
        {"id": "103", "user": "cat", "team": "cv", "start_s": 0, "end_s": 60, "devices": [1], "share": 0.25},
        {"id": "104", "user": "dan", "team": "nlp", "start_s": 0, "end_s": 60, "devices": [2], "mig_instance": 0,
         "share": 0.5},
        {"id": "105", "user": "eve", "team": "rl", "start_s": 10, "end_s": 30, "devices": [2], "mig_instance": 1,
         "share": 0.5},
        {"id": "106", "user": "fay", "team": "rl", "start_s": 45, "end_s": 55, "devices": [0]},
        {"id": "107", "user": "gus", "team": "rl", "start_s": 20, "end_s": 50, "devices": [3]},
    ],
}


def make(clock, data=SCENARIO, state=None, work_dir=None):
    nv = sim_nvml(data, clock)
    sc = nv.scenario
    acfg = parse_config({"attribution": {"mappers": "slurm", "slurm_environ": True, "work_dir": work_dir,
                                         "idle_watts": {H100: 70.0}}})["attribution"]
    acfg = {**acfg, "teams": {**acfg["teams"], "accounts": {"nlp": "nlp", "cv": "cv", "rl": "rl"}}}
    att = build_attribution(acfg, proc_root=write_procfs(sc))
    meter = Meter([NvmlSource(nv, read_processes=True)], StaticIntensity("Z", 200.0), pue=1.2, clock=clock,
                  attribution=att, state=state)
    return meter, GroundTruth(sc)


def run(meter, clock, seconds, step=1.0):
    for _ in range(int(seconds / step)):
        clock.advance(step)
        meter.sample()


def test_per_job_energy_matches_ground_truth_and_parts_add_up(clock):
    meter, truth = make(clock)
    meter.open()
    meter.sample()
    run(meter, clock, 60)
    snap = meter.snapshot
    jobs = {j.job.id: j for j in snap.attribution.jobs}
    # Samples fall on the job boundaries (whole seconds), so attribution is exact up to float rounding
    # and the mJ resolution of the energy counter.
    for job in truth.sc.jobs:
        want = truth.job_allocated_j(job, 0, 60)
        assert jobs[job.id].energy_allocated_j == pytest.approx(want, rel=1e-4, abs=0.01), job.id
    assert jobs["102"].job.team == "cv"
    assert jobs["104"].gpus == {("nvidia", "2.1")} and jobs["105"].gpus == {("nvidia", "2.2")}
    buckets = snap.attribution.gpus
    for d in snap.devices:
        b = buckets[d.identity.uuid]
        mine = [j for j in jobs.values() if any(g.split(".")[0] == str(d.identity.index) for _, g in j.gpus)]
        alloc = math.fsum(j.energy_allocated_j for j in mine) + b.unallocated_j
        active = math.fsum(j.energy_active_j for j in mine) + b.idle_j + b.unattributed_j
        assert alloc == pytest.approx(d.counters.energy_j, rel=1e-9)
        assert active == pytest.approx(d.counters.energy_j, rel=1e-9)
        g = math.fsum(j.emissions_allocated_g for j in mine) + b.unallocated_g
        assert g == pytest.approx(d.counters.emissions_g, rel=1e-9)
    assert buckets[snap.devices[1].identity.uuid].method == "sm"
    assert buckets[snap.devices[2].identity.uuid].method == "mig"


def test_job_counters_survive_a_restart(clock, tmp_path):
    store = StateStore(tmp_path / "state.json")
    meter, _ = make(clock, state=store)
    meter.open()
    meter.sample()
    run(meter, clock, 20)
    before = {j.job.id: j.energy_allocated_j for j in meter.snapshot.attribution.jobs}
    meter.stop()
    meter2, _ = make(clock, state=store)
    meter2.open()
    meter2.sample()
    after = {j.job.id: j.energy_allocated_j for j in meter2.snapshot.attribution.jobs}
    assert set(before) <= set(after) and all(after[k] >= before[k] for k in before)
    assert after["102"] == pytest.approx(before["102"], rel=1e-9)


def test_gpu_seconds_split_shared_gpus_equally_and_mig_by_share_and_survive_a_restart(clock, tmp_path):
    from gpu_carbon_exporter.collector import SnapshotCollector

    store = StateStore(tmp_path / "state.json")
    meter, _ = make(clock, state=store)
    meter.open()
    meter.sample()
    run(meter, clock, 30)
    meter.stop()
    meter, _ = make(clock, state=store)
    meter.open()
    meter.sample()
    run(meter, clock, 30)
    held = {j.job.id: j.gpu_seconds for j in meter.snapshot.attribution.jobs}
    # 101 alone on GPU 0 for 35 s; 102 and 103 share GPU 1 for 60 s; 104 and 105 each on one of
    # GPU 2's two MIG instances (half its SMs) for 60 s and 20 s; 106 alone 10 s; 107 alone 30 s.
    # The restart at 30 s (the clock does not move while it restarts) loses none of it.
    want = {"101": 35.0, "102": 30.0, "103": 30.0, "104": 30.0, "105": 10.0, "106": 10.0, "107": 30.0}
    assert held == pytest.approx(want, abs=1e-6)
    text = "".join(f"{s.name}{s.labels} {s.value}\n"
                   for m in SnapshotCollector(lambda: meter.snapshot, clock=clock).collect()
                   for s in m.samples
                   if s.name == "gpu_carbon_job_gpu_seconds_total")
    assert "'job_id': '101'" in text and text.count("\n") == len(want)


def test_units_of_work_declared_by_jobs_are_counted_never_backwards_and_survive_a_restart(clock, tmp_path, caplog):
    """attribution.work_dir: a job writes 'COUNT UNIT' into a file named by its id; the exporter
    exposes the count as gpu_carbon_job_work_units_total, keeps the largest, and ignores (logging
    once) what is not such a file."""
    import os
    from gpu_carbon_exporter.collector import SnapshotCollector

    work = tmp_path / "work"
    work.mkdir()
    store = StateStore(tmp_path / "state.json")
    meter, _ = make(clock, state=store, work_dir=str(work))
    meter.open()
    meter.sample()
    run(meter, clock, 12)  # 101 starts at 5 s
    (work / "101").write_text("1200 tokens\n")
    (work / "102").write_text("many tokens\n")  # not a count
    (work / "103").write_text("5 TOKENS\n")  # not a unit
    os.symlink(tmp_path / "state.json", work / "104")  # a link is never followed
    os.mkfifo(work / "107")  # would block a reader that opened it plainly
    run(meter, clock, 6)
    (work / "101").write_text("800 tokens\n")  # a count that went down: the larger one stays
    run(meter, clock, 6)

    def exposed() -> dict[str, float]:
        return {s.labels["job_id"] + "/" + s.labels["unit"]: s.value
                for m in SnapshotCollector(lambda: meter.snapshot, clock=clock).collect() for s in m.samples
                if s.name == "gpu_carbon_job_work_units_total"}

    assert exposed() == {"101/tokens": 1200.0}
    for job in ("102", "103", "104", "107"):
        assert sum(f"/{job}" in r.message for r in caplog.records) == 1, job  # once each, not every read
    (work / "101").write_text("5000 tokens\n")
    run(meter, clock, 6)
    meter.stop()
    meter, _ = make(clock, state=store, work_dir=str(work))
    meter.open()
    meter.sample()
    assert exposed() == {"101/tokens": 5000.0}  # from the state, before any read


def test_each_jobs_start_and_end_are_exposed_and_survive_a_restart(clock, tmp_path):
    """gpu_carbon_job_start_time_seconds / _end_time_seconds: the span the job's energy covers, the
    report's duration (docs/report.md). Samples fall on the job boundaries, so they are the
    scenario's own start and end, exactly; a restart in between moves neither."""
    from gpu_carbon_exporter.collector import SnapshotCollector

    store = StateStore(tmp_path / "state.json")
    meter, truth = make(clock, state=store)
    t0 = clock()
    meter.open()
    meter.sample()
    run(meter, clock, 30)
    meter.stop()
    meter, _ = make(clock, state=store)
    meter.open()
    meter.sample()
    run(meter, clock, 30)

    def exposed(name: str) -> dict[str, float]:
        families = SnapshotCollector(lambda: meter.snapshot, clock=clock).collect()
        return {s.labels["job_id"]: s.value - t0 for m in families for s in m.samples
                if s.name == f"gpu_carbon_job_{name}_time_seconds"}

    assert exposed("start") == pytest.approx({job.id: job.start_s for job in truth.sc.jobs}, abs=1e-6)
    assert exposed("end") == pytest.approx({job.id: job.end_s for job in truth.sc.jobs}, abs=1e-6)

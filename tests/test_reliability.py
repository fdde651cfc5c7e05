"""Regression tests for lost data: sampler jams, restarts, damaged state, clock steps, double counting."""
import json
import math
import time
import zlib

import pytest

from gpu_carbon_exporter.carbon.static import StaticIntensity, TimelineIntensity
from gpu_carbon_exporter.startup import build_attribution
from gpu_carbon_exporter.config import parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.patterns import Constant
from gpu_carbon_exporter.sim.procfs import write_procfs
from gpu_carbon_exporter.sim.scenario import GroundTruth
from gpu_carbon_exporter.sim.sysfs import RAPL_MAX_UJ, SysfsSimulator
from gpu_carbon_exporter.sources.base import (DeviceIdentity, DeviceReading, DeviceSource,
                                              SourceUnavailable)
from gpu_carbon_exporter.sources.nvml import NvmlSource
from gpu_carbon_exporter.sources.rapl import RaplSource
from gpu_carbon_exporter.state import StateError, StateStore, read_file

from conftest import ManualClock, sim_nvml

H100 = "NVIDIA H100 80GB HBM3"
TWO_GPUS = {"devices": [{"model": H100, "count": 2, "power": {"pattern": "constant", "watts": 300}}],
            "jobs": [{"id": "7", "user": "ann", "team": "nlp", "start_s": 0, "end_s": 10_000, "devices": [0]}]}


def job_meter(clock, data=TWO_GPUS, state=None, linger=30.0, **kw):
    nv = sim_nvml(data, clock)
    acfg = parse_config({"attribution": {"mappers": "slurm", "slurm_environ": True,
                                         "linger_seconds": linger}})["attribution"]
    att = build_attribution(acfg, proc_root=write_procfs(nv.scenario))
    meter = Meter([NvmlSource(nv, read_processes=True)], StaticIntensity("Z", 200.0), clock=clock,
                  attribution=att, state=state, boot_id=lambda: "boot-1", **kw)
    return meter, nv


def run(meter, clock, seconds, step=1.0):
    for _ in range(int(round(seconds / step))):
        clock.advance(step)
        meter.sample()


def all_counters(snap) -> dict[str, float]:
    """Every counter the exporter exposes from a snapshot, by a unique name."""
    out = {}
    for d in snap.devices:
        for k in ("energy_j", "emissions_g", "embodied_g", "water_l", "rest_energy_j"):
            out[f"{d.identity.uuid}/{k}"] = getattr(d.counters, k)
    if snap.attribution is not None:
        for j in snap.attribution.jobs:
            for k in ("energy_allocated_j", "energy_active_j", "emissions_allocated_g", "emissions_active_g",
                      "embodied_g"):
                out[f"{j.job.key}/{k}"] = getattr(j, k)
        for uuid, b in snap.attribution.gpus.items():
            for k, v in vars(b).items():
                if k != "method":
                    out[f"{uuid}/bucket/{k}"] = v
    return out


# -- 1. the sampler never jams ---------------------------------------------------------------
def test_lost_gpu_returning_after_its_job_expired_does_not_jam_the_sampler():
    clock = ManualClock()
    meter, nv = job_meter(clock, lost_device_retry_seconds=1)
    meter.open()
    meter.sample()
    run(meter, clock, 5)
    nv.lost.add(0)
    run(meter, clock, 40)  # longer than the 30-s linger: job 7 expires while GPU 0 is lost
    assert not meter.snapshot.devices[0].up
    nv.lost.clear()
    run(meter, clock, 5)
    snap = meter.snapshot
    assert snap.devices[0].up and snap.collectors["nvml"].success
    truth = GroundTruth(nv.scenario)
    for i in (0, 1):  # both GPUs keep being sampled, energy while lost is recovered
        assert snap.devices[i].counters.energy_j == pytest.approx(truth.device_energy_j(i, 0, 50), abs=0.01)
    # who held GPU 0 while it was lost is unknown: those 41 s (t=5..46) are unallocated, and job 7,
    # expired meanwhile, starts afresh when it is seen again (4 s since)
    b = snap.attribution.gpus[snap.devices[0].identity.uuid]
    assert b.unallocated_j == pytest.approx(41 * 300.0, abs=0.01)
    job = next(j for j in snap.attribution.jobs if j.job.id == "7")
    assert job.energy_allocated_j == pytest.approx(4 * 300.0, abs=0.01)


def test_a_bug_in_one_devices_accounting_degrades_that_device_only():
    clock = ManualClock()
    meter, _ = job_meter(clock)
    meter.open()
    meter.sample()
    bad = meter.snapshot.devices[0].identity.uuid
    real = meter.attribution.account

    def account(device, *a):
        if device.uuid == bad:
            raise RuntimeError("bug")
        return real(device, *a)

    meter.attribution.account = account
    run(meter, clock, 3)
    snap = meter.snapshot
    assert snap.devices[1].counters.energy_j == pytest.approx(900.0, abs=0.01)
    assert snap.time == clock()  # a fresh snapshot each sample


# -- 2. RAPL restarts ----------------------------------------------------------------------------
def rapl_meter(root, clock, state, boot="boot-1"):
    return Meter([RaplSource(root, clock=clock)], StaticIntensity("Z", 300), clock=clock, state=state,
                 boot_id=lambda: boot)


def pkg(meter):
    return next(d for d in meter.snapshot.devices if d.identity.name == "package-0").counters.energy_j


@pytest.mark.parametrize("down_s, boot, want_j", [
    (10, "boot-1", 2000.0),  # shorter than a wrap: recovered exactly
    (1500, "boot-1", 1500 * 200.0 - RAPL_MAX_UJ / 1e6),  # longer: one wrap unseen, under-counted, never more
    (10, "boot-2", 0.0),  # rebooted: the old register value is no baseline
])
def test_rapl_restart_recovers_downtime_and_never_invents_energy(tmp_path, caplog, down_s, boot, want_j):
    caplog.set_level("INFO")
    sim = SysfsSimulator(tmp_path, rapl=Constant(200.0))
    clock = ManualClock()
    store = StateStore(tmp_path / "state.json")
    meter = rapl_meter(tmp_path, clock, store)
    meter.open()
    meter.sample()
    for _ in range(30):  # 30 min at 200 W: the package counter (262 kJ range) wraps
        clock.advance(60)
        sim.update(clock.sim)
        meter.sample()
    before = pkg(meter)
    assert before == pytest.approx(1800 * 200.0, rel=1e-6)
    meter.stop()
    clock.advance(down_s)
    sim.update(clock.sim)
    meter = rapl_meter(tmp_path, clock, StateStore(tmp_path / "state.json"), boot)
    meter.open()
    meter.sample()
    assert pkg(meter) - before == pytest.approx(want_j, abs=0.01)
    if want_j > 0:  # devices are logged by their kind
        assert "RAPL zone rapl:intel-rapl:0: " in caplog.text and "used while the exporter was down" in caplog.text


# -- 3. no counter ever goes backwards, even across kill -9 --------------------------------------
def test_counters_never_go_backwards_across_crashes_at_random_moments(tmp_path):
    """A meter abandoned without stop() (as kill -9 leaves it) at random samples, many times over."""
    import random

    rng = random.Random(7)
    data = {"devices": [{"model": H100, "count": 3, "power": {"pattern": "bursts", "seed": 3, "low_w": 80,
                                                              "high_w": 600, "mean_on_s": 2, "mean_off_s": 3}}],
            "jobs": [{"id": str(i), "user": "u", "team": "t", "start_s": i * 7, "end_s": i * 7 + 20,
                      "devices": [i % 3]} for i in range(12)]}
    clock = ManualClock()
    exposed: dict[str, float] = {}
    for _ in range(15):
        meter, _ = job_meter(clock, data, StateStore(tmp_path / "state.json"), persist_interval_seconds=60)
        meter.open()
        for _ in range(rng.randint(0, 9)):
            meter.sample()
            for k, v in all_counters(meter.snapshot).items():
                assert v >= exposed.get(k, 0.0) - 1e-9, k
                exposed[k] = v
            clock.advance(rng.uniform(0.1, 2.0))
        clock.advance(rng.uniform(0, 5))  # down for a while; nothing persisted at "exit"
    assert len(exposed) > 20


def started(clock, tmp_path, run_s=0.0):
    """A job meter on the state in ``tmp_path``, opened and sampled (for ``run_s`` seconds)."""
    meter, nv = job_meter(clock, state=StateStore(tmp_path / "state.json"))
    meter.open()
    meter.sample()
    run(meter, clock, run_s)
    return meter, nv


def test_first_run_killed_before_its_first_persist_keeps_its_counters(tmp_path):
    clock = ManualClock()
    meter, _ = started(clock, tmp_path, 3)
    seen = all_counters(meter.snapshot)
    meter, _ = started(clock, tmp_path)  # the first one never stopped: killed
    now = all_counters(meter.snapshot)
    assert all(now[k] >= v for k, v in seen.items())
    assert now[f"{meter.snapshot.devices[0].identity.uuid}/energy_j"] > 0


def test_downtime_energy_goes_to_the_jobs_that_held_the_gpu(tmp_path):
    clock = ManualClock()
    started(clock, tmp_path, 5)
    clock.advance(20)  # killed, down 20 s while job 7 kept running on GPU 0
    meter, nv = started(clock, tmp_path)
    job = next(j for j in meter.snapshot.attribution.jobs if j.job.id == "7")
    assert job.energy_allocated_j == pytest.approx(GroundTruth(nv.scenario).device_energy_j(0, 0, 25), abs=0.05)


# -- 4. devices absent at start-up keep their saved counters ----------------------------------
class _Missing(DeviceSource):
    name = "nvml"

    def open(self):
        raise SourceUnavailable("NVML not loaded yet")

    def read(self, device, *, slow):
        raise AssertionError

    def read_power_mw(self, device):
        raise AssertionError


def test_state_keeps_gpus_absent_at_start_up(tmp_path):
    clock = ManualClock()
    sim = SysfsSimulator(tmp_path / "sys", rapl=Constant(50.0))
    store_path = tmp_path / "state.json"
    meter, nv = job_meter(clock, state=StateStore(store_path))
    meter.open()
    meter.sample()
    run(meter, clock, 5)
    meter.stop()
    gpu_j = {d.identity.uuid: d.counters.energy_j for d in meter.snapshot.devices}
    # NVIDIA driver not loaded yet: NVML fails, RAPL opens; the exporter persists several times
    early = Meter([_Missing(), RaplSource(tmp_path / "sys", clock=clock)], StaticIntensity("Z", 200),
                  clock=clock, state=StateStore(store_path), boot_id=lambda: "boot-1", persist_interval_seconds=1)
    early.open()
    for _ in range(3):
        clock.advance(1)
        sim.update(clock.sim)
        early.sample()
    early.stop()
    assert set(gpu_j) <= set(read_file(store_path)["devices"])
    meter, _ = job_meter(clock, state=StateStore(store_path))
    meter.open()
    meter.sample()
    for d in meter.snapshot.devices:
        assert d.counters.energy_j == pytest.approx(gpu_j[d.identity.uuid] + 3 * 300, abs=0.01)  # 3 s more


# -- 5. damaged values inside a valid state file ----------------------------------------------------
def write_state(path, data):
    body = json.dumps({**data, "format": 2}).encode()  # allows NaN and Infinity, as damage may
    path.write_bytes(b"gpu-carbon-exporter-state 2 999999 %08x %d\n" % (zlib.crc32(body), len(body)) + body)


@pytest.mark.parametrize("bad", ["abc", None, math.nan, -1e12, math.inf, [1]])
def test_damaged_values_are_set_aside_not_exposed(tmp_path, caplog, bad):
    clock = ManualClock()
    meter, _ = job_meter(clock, state=StateStore(tmp_path / "state.json"))
    meter.open()
    meter.sample()
    run(meter, clock, 3)
    meter.stop()
    data = read_file(tmp_path / "state.json")
    uuids = [d.identity.uuid for d in meter.snapshot.devices]
    data["devices"][uuids[0]]["energy_j"] = bad
    data["attribution"]["jobs"]["slurm/7"]["energy_allocated_j"] = "zz" if bad is not None else bad
    data["attribution"]["holders"][uuids[1]] = [[1.0, "1", [bad]]]  # a holder that is not a mapping
    write_state(tmp_path / "state.json", data)
    for _ in range(2):  # the second start must not crash either (nothing bad was written back)
        meter, _ = job_meter(clock, state=StateStore(tmp_path / "state.json"))
        meter.open()
        meter.sample()
        snap = meter.snapshot
        assert all(math.isfinite(v) and v >= 0 for v in all_counters(snap).values())
        meter.stop()
    assert snap.devices[1].counters.energy_j > 800  # the intact GPU kept its counters
    assert list(tmp_path.glob("state.json.corrupt-*"))
    assert "set aside" in caplog.text


def test_damaged_state_is_counted_in_a_health_metric(tmp_path):
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from gpu_carbon_exporter.collector import SnapshotCollector

    write_state(tmp_path / "state.json", {"saved_at": 1, "devices": {"GPU-x": {"energy_j": "abc"}}})
    clock = ManualClock()
    meter, _ = job_meter(clock, state=StateStore(tmp_path / "state.json"))
    meter.open()
    meter.sample()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: meter.snapshot, clock=clock))
    assert "gpu_carbon_state_discarded_entries 1.0" in generate_latest(reg).decode()


def test_a_state_from_before_held_gpus_carried_their_vendor_restores_bare_slots_without_one(tmp_path):
    """A state saved before a job's GPUs carried their vendor (each a bare slot, "0"): AMD and Intel
    GPUs were attributed by then, so the vendor is unknown (""). The job, holding NVIDIA GPU 0 again,
    has it once, with its vendor; its other GPU ("1", held before the restart) stays without one; an
    entry of neither shape sets the job aside. Saved again, each is [vendor, slot]."""
    from gpu_carbon_exporter.collector import SnapshotCollector

    clock = ManualClock()
    t = clock()
    job = {"job": {"id": "7", "scheduler": "slurm", "user": "ann", "team": "nlp", "account": "", "namespace": "",
                   "pod": ""},
           "energy_allocated_j": 1000.0, "energy_active_j": 900.0, "emissions_allocated_g": 50.0,
           "emissions_active_g": 45.0, "embodied_g": 0.0, "gpu_seconds": 10.0, "work": {}, "gpus": ["0", "1"],
           "first_seen": t - 10, "held_from": t - 10, "held_until": t, "last_seen": t}
    write_state(tmp_path / "state.json", {"saved_at": t, "boot_id": "boot-1", "devices": {}, "attribution": {
        "jobs": {"slurm/7": job, "slurm/8": {**job, "job": {**job["job"], "id": "8"}, "gpus": [["amd"]]}}}})
    meter, _ = job_meter(clock, state=StateStore(tmp_path / "state.json"))
    meter.open()
    meter.sample()
    run(meter, clock, 2)
    (restored,) = meter.snapshot.attribution.jobs  # job 8's GPUs are damaged: set aside
    assert restored.gpus == {("nvidia", "0"), ("", "1")}
    assert restored.energy_allocated_j == pytest.approx(1000.0 + 2 * 300.0, abs=0.01)
    series = [s.labels for m in SnapshotCollector(lambda: meter.snapshot, clock=clock).collect() for s in m.samples
              if s.name == "gpu_carbon_job_gpu_info"]
    assert series == [{"job_id": "7", "scheduler": "slurm", "gpu": "1", "vendor": ""},
                      {"job_id": "7", "scheduler": "slurm", "gpu": "0", "vendor": "nvidia"}]
    assert meter.snapshot.state_discarded == 1
    meter.stop()  # saved in today's shape: [vendor, slot]
    assert read_file(tmp_path / "state.json")["attribution"]["jobs"]["slurm/7"]["gpus"] == [["", "1"],
                                                                                         ["nvidia", "0"]]


# -- 6. never destroy a file that is not ours --------------------------------------------------------
def test_state_path_holding_a_foreign_file_is_refused(tmp_path):
    foreign = tmp_path / "config.yml"
    foreign.write_text("carbon: {zone: DEU}\n")
    with pytest.raises(StateError, match="not a gpu-carbon-exporter state file"):
        StateStore(foreign)
    assert foreign.read_text() == "carbon: {zone: DEU}\n"
    (tmp_path / "dir").mkdir()
    with pytest.raises(StateError, match="not a regular file"):
        StateStore(tmp_path / "dir")


# -- 7. clock steps ----------------------------------------------------------------------------------
def test_wall_clock_steps_add_no_energy_and_do_not_stop_sampling():
    mono = ManualClock(start=1000.0)
    wall = ManualClock()
    nv = sim_nvml({"devices": [{"model": "Tesla P100-PCIE-16GB", "power": {"pattern": "constant",
                                                                         "watts": 10}}]}, mono)
    meter = Meter([NvmlSource(nv)], StaticIntensity("Z", 100), clock=mono, wall=wall)
    meter.open()
    meter.sample()
    for step in (30 * 86400, -30 * 86400, -3600):
        for _ in range(10):
            mono.advance(0.1)
            wall.advance(0.1)
            meter.integrate()
        wall.advance(step)  # an NTP step, or a Jetson without an RTC setting its clock at boot
        mono.advance(1.0)
        wall.advance(1.0)
        meter.sample()
    assert meter.snapshot.devices[0].counters.energy_j == pytest.approx(10 * 6.0, rel=1e-6)


def test_sampler_thread_keeps_sampling_after_a_backward_wall_step():
    offset = [0.0]
    nv = sim_nvml({"devices": [{"model": H100, "power": {"pattern": "constant", "watts": 100}}]},
                  ManualClock())
    meter = Meter([NvmlSource(nv)], StaticIntensity("Z", 100), wall=lambda: time.time() + offset[0],
                  interval_seconds=0.05)
    meter.start()
    try:
        deadline = time.monotonic() + 30
        offset[0] = -3600.0
        first = meter.snapshot.mono
        while meter.snapshot.mono - first <= 0.3:  # still sampling (every 50 ms) after the step
            assert time.monotonic() < deadline, "sampling stopped after the wall clock stepped back"
            time.sleep(0.01)
    finally:
        meter.stop()


# -- 13. whole-node power is not counted twice --------------------------------------------------------
class _Node(DeviceSource):
    name = "redfish"

    def __init__(self, watts):
        self.watts = watts

    def open(self):
        return [DeviceIdentity(0, "redfish:1", "chassis", kind="node", has_energy_counter=False,
                               fast_integration=False, labels=(("source", "redfish"),))]

    def read(self, device, *, slow):
        return DeviceReading(power_mw=self.watts * 1000)

    def read_power_mw(self, device):
        return self.watts * 1000


@pytest.mark.parametrize("node_w, want_rest_w", [(1000, 400), (500, 0)])
def test_node_emissions_count_only_what_the_parts_do_not(node_w, want_rest_w):
    clock = ManualClock()
    nv = sim_nvml({"devices": [{"model": H100, "power": {"pattern": "constant", "watts": 600}}]}, clock)
    meter = Meter([NvmlSource(nv), _Node(node_w)], StaticIntensity("Z", 360), clock=clock)
    meter.open()
    meter.sample()
    run(meter, clock, 10)
    gpu, node = meter.snapshot.devices
    assert node.counters.energy_j == pytest.approx(node_w * 10)
    assert node.counters.rest_energy_j == pytest.approx(want_rest_w * 10, abs=0.01)
    total_g = gpu.counters.emissions_g + node.counters.emissions_g
    assert total_g == pytest.approx(max(node_w, 600) * 10 * 360 / 3.6e6, rel=1e-6)


# -- 14. downtime energy at the intensities in force while down -----------------------------------
def test_downtime_emissions_use_the_intensity_timeline(tmp_path):
    clock = ManualClock()
    data = {"devices": [{"model": H100, "power": {"pattern": "constant", "watts": 500}}]}

    def make():
        nv = sim_nvml(data, clock)
        timeline = TimelineIntensity("Z", nv.scenario.intensity.get("Z") or _steps(), lambda: clock.start)
        return Meter([NvmlSource(nv)], timeline, clock=clock, state=StateStore(tmp_path / "s.json"),
                     boot_id=lambda: "b"), nv

    meter, _ = make()
    meter.open()
    meter.sample()
    run(meter, clock, 5)
    meter.stop()
    clock.advance(30)  # down across the step at t=20 (300 -> 100 g/kWh)
    meter, _ = make()
    meter.open()
    meter.sample()
    want = 500 * (20 * 300 + 15 * 100) / 3.6e6
    assert meter.snapshot.devices[0].counters.emissions_g == pytest.approx(want, rel=1e-4)


def _steps():
    from gpu_carbon_exporter.carbon.timeline import Timeline

    return Timeline(((0.0, 300.0), (20.0, 100.0)))


# -- 9. one bad value never fails the whole scrape -----------------------------------------------
def scrape(meter, clock):
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from gpu_carbon_exporter.collector import SnapshotCollector

    reg = CollectorRegistry(auto_describe=False)
    collector = SnapshotCollector(lambda: meter.snapshot, clock=clock)
    reg.register(collector)
    return collector, lambda: generate_latest(reg).decode()


def test_mig_instance_without_an_id_is_named_by_position_and_scrapes():
    from gpu_carbon_exporter.attribution.engine import Attribution
    from gpu_carbon_exporter.attribution.model import Holder, Job
    from gpu_carbon_exporter.sources.base import MigInstance

    clock = ManualClock()

    class OneJob:
        name = "fixed"

        def refresh(self):
            pass

        def holders(self, device, mig, procs):
            return [Holder(Job("42", "slurm"))]

    mig = MigInstance("MIG-x", None, None, 0, sm_count=14)

    class MigGpu(_Node):
        name = "nvml"

        def open(self):
            return [DeviceIdentity(0, "GPU-m", "H100", mig_enabled=True, mig_instances=(mig,))]

        def read(self, device, *, slow):
            return DeviceReading(power_mw=200_000, energy_mj=int(clock.sim * 200_000), processes=[])

    meter = Meter([MigGpu(0)], StaticIntensity("Z", 100), clock=clock, attribution=Attribution([OneJob()]))
    meter.open()
    meter.sample()
    run(meter, clock, 2)
    _, text = scrape(meter, clock)
    out = text()
    assert 'gpu_carbon_job_gpu_info{gpu="0.i0",job_id="42",scheduler="slurm",vendor="nvidia"} 1.0' in out
    assert 'gpu_carbon_job_energy_joules_total{job_id="42",scheduler="slurm",view="allocated"} 400.0' in out


def test_a_failing_section_is_left_out_and_counted_the_rest_is_served():
    clock = ManualClock()
    meter, _ = job_meter(clock)
    meter.open()
    meter.sample()
    collector, text = scrape(meter, clock)

    def broken(snap):
        raise ValueError("bad label")

    collector._jobs = broken
    out = text()
    assert not any(line.startswith("gpu_carbon_job_") for line in out.splitlines())
    assert 'gpu_carbon_gpu_energy_joules_total{gpu="0"' in out
    assert 'gpu_carbon_scrape_errors_total{section="jobs"} 1.0' in out
    assert 'gpu_carbon_scrape_errors_total{section="carbon"} 0.0' in out


# -- review follow-ups: restarts with jobs --------------------------------------------------------------
class _Blind:
    """A mapper that has not answered yet (a kubelet still starting): no holders."""

    name = "blind"

    def refresh(self):
        pass

    def holders(self, device, mig, procs):
        return []


def test_restored_jobs_outlive_a_restart_longer_than_the_linger_time(tmp_path):
    clock = ManualClock()
    meter, _ = job_meter(clock, state=StateStore(tmp_path / "state.json"))
    meter.open()
    meter.sample()
    run(meter, clock, 5)
    before = next(j for j in meter.snapshot.attribution.jobs if j.job.id == "7").energy_allocated_j
    clock.advance(600)  # down for 10 min, longer than the 30-s linger
    meter, _ = job_meter(clock, state=StateStore(tmp_path / "state.json"))
    meter.attribution.mappers = [_Blind()]  # the mapper has not seen the job again yet
    meter.open()
    meter.sample()
    job = next(j for j in meter.snapshot.attribution.jobs if j.job.id == "7")
    assert job.energy_allocated_j == pytest.approx(before + 600 * 300.0, abs=0.05)  # downtime to its holder


def test_embodied_carbon_is_not_given_to_jobs_for_the_downtime(tmp_path):
    from gpu_carbon_exporter.meter import Embodied

    clock = ManualClock()
    emb = Embodied(kg_co2e_per_device=150, lifetime_years=5)

    def make():
        m, _ = job_meter(clock, state=StateStore(tmp_path / "state.json"), embodied=emb)
        m.attribution.embodied_g_per_s = emb.grams_per_second
        return m

    meter = make()
    meter.open()
    meter.sample()
    run(meter, clock, 5)
    clock.advance(3600)
    meter = make()
    meter.open()
    meter.sample()
    run(meter, clock, 5)
    snap = meter.snapshot
    gpu0 = snap.devices[0]
    jobs = sum(j.embodied_g for j in snap.attribution.jobs)
    rest = snap.attribution.gpus[gpu0.identity.uuid].unallocated_embodied_g
    assert jobs + rest == pytest.approx(gpu0.counters.embodied_g, rel=1e-9)  # GPU 0: job 7 all along


def test_a_failed_durable_write_still_leaves_a_crash_checkpoint(tmp_path):
    clock = ManualClock()
    store = StateStore(tmp_path / "state.json")

    def full_disk(data):
        raise OSError(28, "No space left on device")

    store.save = full_disk
    meter, _ = job_meter(clock, state=store, persist_interval_seconds=1)
    meter.open()
    meter.sample()
    run(meter, clock, 3)
    seen = all_counters(meter.snapshot)
    assert not meter.snapshot.collectors["state"].success
    meter, _ = job_meter(clock, state=StateStore(tmp_path / "state.json"))  # killed, restarted
    meter.open()
    meter.sample()
    now = all_counters(meter.snapshot)
    assert all(now[k] >= v for k, v in seen.items())


def test_a_stale_bmc_reading_is_retried_at_the_next_sample_and_bridged():
    from gpu_carbon_exporter.sources.base import DeviceStale

    clock = ManualClock()
    stale = [False]

    class Bmc(_Node):
        def read(self, device, *, slow):
            if stale[0]:
                raise DeviceStale("redfish: no fresh reading")
            return super().read(device, slow=slow)

    meter = Meter([Bmc(500)], StaticIntensity("Z", 100), clock=clock, lost_device_retry_seconds=30)
    meter.open()
    meter.sample()
    run(meter, clock, 2)
    stale[0] = True
    run(meter, clock, 2)
    assert not meter.snapshot.devices[0].up
    stale[0] = False
    run(meter, clock, 1)  # retried at once (not after lost_device_retry_seconds); the gap is bridged
    node = meter.snapshot.devices[0]
    assert node.up and node.counters.energy_j == pytest.approx(500 * 5)

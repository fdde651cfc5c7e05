"""Conservation, as properties: every joule and gram goes somewhere, exactly once."""
import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gpu_carbon_exporter.attribution.engine import Attribution
from gpu_carbon_exporter.attribution.mappers import Mapper
from gpu_carbon_exporter.attribution.model import Holder, Job
from gpu_carbon_exporter.accounting.split import split, weights
from gpu_carbon_exporter.sources.base import DeviceIdentity, DeviceReading, MigInstance

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
holder = st.builds(lambda k, sm, mem: Holder(Job(str(k), "slurm"), sm_util=sm, memory_bytes=mem),
                   st.integers(0, 5), st.one_of(st.none(), st.integers(0, 100)),
                   st.one_of(st.none(), st.integers(0, 10**11)))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


@given(finite, finite, st.lists(holder, max_size=6))
# a zero-weight last holder whose remainder share rounded to about -1e-16 before the clamp
@example(1.1, 0.0, [Holder(Job(k, "slurm"), sm_util=w)
                    for k, w in zip("abcdef", [7, 0.13534597739545295, 3, 0, 1, 0])])
def test_split_conserves_energy_in_both_views(energy, idle, holders):
    s = split(energy, idle, holders)
    assert close(math.fsum(s.allocated.values()) + s.unallocated, energy)
    assert close(math.fsum(s.active.values()) + s.idle + s.unattributed, energy)
    # never below zero, not even by rounding: a job counter must never decrease
    assert all(v >= 0.0 for v in [*s.allocated.values(), *s.active.values(), s.unallocated, s.idle, s.unattributed])
    if holders:
        assert s.unallocated == 0 and s.unattributed == 0
        assert set(s.allocated) == {h.job.key for h in holders}


@given(st.lists(holder, min_size=1, max_size=6))
def test_weights_sum_to_one_and_name_their_method(holders):
    method, w = weights(holders)
    assert close(sum(w), 1.0) and all(x >= 0 for x in w)
    assert method in ("exclusive", "sm", "memory", "equal")
    if method == "sm":
        assert all(h.sm_util is not None for h in holders)


class FixedMapper(Mapper):
    """Holders chosen by the test, per (gpu index, MIG instance index)."""

    def __init__(self):
        self.table = {}

    def holders(self, device, mig, procs):
        return self.table.get((device.index, mig.index if mig else None))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.one_of(st.none(), st.integers(0, 2)),
                          st.lists(st.integers(0, 4), max_size=3, unique=True),
                          finite, st.floats(0.1, 5.0)), min_size=1, max_size=25),
       st.booleans())
def test_engine_conserves_over_random_job_mixes(steps, mig):
    """Random churn over 3 GPUs (optionally MIG with 3 instances): parts add up to the whole."""
    mapper = FixedMapper()
    att = Attribution([mapper], idle_watts={"sim": 60.0})
    instances = tuple(MigInstance(f"MIG-{i}", i + 1, 0, i, sm_count=[14, 28, 56][i]) for i in range(3)) if mig else ()
    devices = [DeviceIdentity(i, f"GPU-{i}", "sim", mig_enabled=mig, mig_instances=instances) for i in range(3)]
    total_e = {d.uuid: 0.0 for d in devices}
    total_g = {d.uuid: 0.0 for d in devices}
    t = 0.0
    seen: dict[str, tuple[float, ...]] = {}
    for gpu, inst, jobs, energy, dt in steps:
        # sm_util 0 for job 0: a zero-weight holder, whose remainder share used to round below 0
        mapper.table = {(gpu, inst if mig else None): [Holder(Job(str(j), "slurm"), sm_util=10 * j) for j in jobs]}
        dev = devices[gpu]
        att.assign(dev, DeviceReading(power_mw=100_000), t)
        att.account(dev, energy, energy * 1e-4, t, t + dt)
        total_e[dev.uuid] += energy
        total_g[dev.uuid] += energy * 1e-4
        t += dt
        for j in att.snapshot().jobs:  # every job counter is monotonic
            now = (j.energy_allocated_j, j.energy_active_j, j.emissions_allocated_g, j.emissions_active_g)
            assert all(b >= a for a, b in zip(seen.get(j.job.key, (0.0,) * 4), now)), j.job.key
            seen[j.job.key] = now
    snap = att.snapshot()
    jobs_alloc = math.fsum(j.energy_allocated_j for j in snap.jobs)
    jobs_active = math.fsum(j.energy_active_j for j in snap.jobs)
    jobs_alloc_g = math.fsum(j.emissions_allocated_g for j in snap.jobs)
    whole = math.fsum(total_e.values())
    assert math.isclose(jobs_alloc + math.fsum(b.unallocated_j for b in snap.gpus.values()), whole,
                        rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(jobs_active + math.fsum(b.idle_j + b.unattributed_j for b in snap.gpus.values()), whole,
                        rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(jobs_alloc_g + math.fsum(b.unallocated_g for b in snap.gpus.values()),
                        math.fsum(total_g.values()), rel_tol=1e-9, abs_tol=1e-9)


def test_mig_split_follows_sm_share_and_counts_the_parent_once():
    mapper = FixedMapper()
    inst = tuple(MigInstance(f"MIG-{i}", i + 1, 0, i, sm_count=sm) for i, sm in enumerate((14, 42)))
    dev = DeviceIdentity(0, "GPU-0", "sim", mig_enabled=True, mig_instances=inst)
    mapper.table = {(0, 0): [Holder(Job("a", "slurm"))], (0, 1): [Holder(Job("b", "slurm"))]}
    att = Attribution([mapper], idle_watts={"sim": 0.0})
    att.assign(dev, DeviceReading(power_mw=1), 0.0)
    att.account(dev, 560.0, 0.0, 0.0, 1.0)
    jobs = {j.job.id: j for j in att.snapshot().jobs}
    assert jobs["a"].energy_allocated_j == 140.0 and jobs["b"].energy_allocated_j == 420.0
    assert att.snapshot().gpus["GPU-0"].method == "mig"
    assert jobs["a"].gpus == {("nvidia", "0.1")} and jobs["b"].gpus == {("nvidia", "0.2")}


def test_idle_power_shared_equally_in_allocated_view_and_reported_in_active_view():
    mapper = FixedMapper()
    dev = DeviceIdentity(0, "GPU-0", "H100")
    mapper.table = {(0, None): [Holder(Job("a", "slurm"), sm_util=30), Holder(Job("b", "slurm"), sm_util=10)]}
    att = Attribution([mapper], idle_watts={"H100": 70.0})
    att.assign(dev, DeviceReading(power_mw=470_000), 0.0)
    att.account(dev, 470.0, 1.0, 0.0, 1.0)  # 1 s at 470 W: 70 J idle, 400 J active
    jobs = {j.job.id: j for j in att.snapshot().jobs}
    assert jobs["a"].energy_active_j == 300.0 and jobs["b"].energy_active_j == 100.0
    assert jobs["a"].energy_allocated_j == 335.0 and jobs["b"].energy_allocated_j == 135.0
    assert att.snapshot().gpus["GPU-0"].idle_j == 70.0 and att.snapshot().gpus["GPU-0"].method == "sm"


def test_linger_then_drop():
    mapper = FixedMapper()
    dev = DeviceIdentity(0, "GPU-0", "sim")
    att = Attribution([mapper], linger_seconds=30)
    mapper.table = {(0, None): [Holder(Job("a", "slurm"))]}
    att.assign(dev, DeviceReading(), 0.0)
    mapper.table = {}
    att.assign(dev, DeviceReading(), 10.0)
    att.expire(25.0)
    assert [j.job.id for j in att.snapshot().jobs] == ["a"]  # still exposed: final value visible
    att.expire(31.0)  # last seen at 0 s, linger 30 s
    assert att.snapshot().jobs == ()


def test_embodied_carbon_follows_gpu_time_held():
    mapper = FixedMapper()
    dev = DeviceIdentity(0, "GPU-0", "sim")
    att = Attribution([mapper], embodied_g_per_s=0.002)
    mapper.table = {(0, None): [Holder(Job("a", "slurm")), Holder(Job("b", "slurm"))]}
    att.assign(dev, DeviceReading(), 0.0)
    att.account(dev, 100.0, 0.01, 0.0, 10.0)
    mapper.table = {}
    att.assign(dev, DeviceReading(), 10.0)
    att.account(dev, 100.0, 0.01, 10.0, 15.0)
    jobs = {j.job.id: j for j in att.snapshot().jobs}
    assert jobs["a"].embodied_g == jobs["b"].embodied_g == 0.01
    assert att.snapshot().gpus["GPU-0"].unallocated_embodied_g == 0.002 * 5

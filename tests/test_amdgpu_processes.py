"""Processes on AMD GPUs (sources/amdgpu.py): DRM client engine time from fdinfo, ROCm holders from the
KFD, the attribution engine over them (conserved exactly, across vendors), and the start-up check of
each energy accumulator, over the simulator's driver-shaped trees (sim/amdgpu.py, sim/amdgpu_clients.py)."""
import logging
import math
import os
import shutil

import pytest

from gpu_carbon_exporter.attribution.fdinfo import DrmClientScanner
from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.config import parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.amdgpu import AmdgpuSimulator
from gpu_carbon_exporter.sim.amdgpu_clients import DMA_SHARE, FD_DRM
from gpu_carbon_exporter.sim.intel import IntelGpuSimulator
from gpu_carbon_exporter.sim.nvml import SimulatedNvml
from gpu_carbon_exporter.sim.procfs import write_procfs
from gpu_carbon_exporter.sim.scenario import load_scenario, parse_scenario
from gpu_carbon_exporter.sim.trace import job_pid
from gpu_carbon_exporter.sources.amdgpu import AmdgpuSource
from gpu_carbon_exporter.sources.intel_gpu import IntelGpuSource
from gpu_carbon_exporter.sources.kfd import KfdProcesses
from gpu_carbon_exporter.sources.nvml import NvmlSource
from gpu_carbon_exporter.startup import build_attribution

from conftest import ManualClock

MI300X, MI100, MAX, H100 = "AMD Instinct MI300X", "AMD Instinct MI100", "Intel Data Center GPU Max 1550", \
    "NVIDIA H100 80GB HBM3"
STEPS = {"pattern": "steps", "steps": [[0, 150], [3, 620], [7, 410], [11, 700]]}
SHARED = {"devices": [{"model": MI300X, "power": STEPS}, {"model": MI300X, "power": {"pattern": "constant",
                                                                                       "watts": 300}}],
          "jobs": [{"id": "1", "devices": [0], "share": 0.6}, {"id": "2", "devices": [0], "share": 0.4},
                   {"id": "3", "devices": [0, 1], "start_s": 4, "end_s": 9, "share": 0.5},
                   {"id": "4", "devices": [1], "share": 0.25}]}


def amd_node(tmp_path, data=SHARED, at=0.0):
    clock = ManualClock()
    clock.advance(at)
    sc = parse_scenario(data, "<test>")
    proc = write_procfs(sc, tmp_path / "proc")
    sim = AmdgpuSimulator(tmp_path / "sys", [d for d in sc.devices if d.model.vendor == "amd"])
    clients = sim.attach_clients(sc, proc)
    sim.update(clock.sim)
    scanner = DrmClientScanner(proc, tmp_path / "sys", clock=clock)
    src = AmdgpuSource(tmp_path / "sys", clock=clock, clients=scanner, read_processes=True)
    return sc, sim, clients, clock, src


def step(sims, clock, seconds, at=0.0):
    clock.advance(seconds)
    for sim in sims:
        sim.update(at + clock.sim)


def truth_pct(clients, sc, j, d, t0, t1):
    """A job's percent of [t0, t1] on card d: its gfx utilisation plus a tenth of it on dma."""
    job, dev = sc.jobs[j], sc.devices[d]
    busy = sum(b - a for a, b in job.intervals(t0, t1))
    return 100 * (1 + DMA_SHARE) * clients.rate(job, dev) * busy / (t1 - t0)



def slurm_meter_run(sources: list, proc_root, clock, sims: list, seconds: int, pue: float = 1.0):
    """A meter over ``sources`` with the Slurm mapper reading ``proc_root``, sampled once, then once a
    second for ``seconds`` while the simulators ``sims`` step: its last snapshot."""
    acfg = parse_config({"attribution": {"mappers": "slurm", "slurm_environ": True}})["attribution"]
    meter = Meter(sources, StaticIntensity("Z", 300.0), pue=pue, clock=clock,
                  attribution=build_attribution(acfg, proc_root=proc_root))
    meter.open()
    meter.sample()
    for _ in range(seconds):
        step(sims, clock, 1.0)
        meter.sample()
    return meter.snapshot

def test_per_process_shares_match_the_simulated_engine_time(tmp_path):
    sc, sim, clients, clock, src = amd_node(tmp_path)
    devices = src.open()
    first = [src.read(d, slow=False).processes for d in devices]
    assert [len(p) for p in first] == [2, 1] and all(p.sm_util_pct is None for ps in first for p in ps)  # no interval
    t0 = 0.0
    for t1 in (1.0, 4.0, 5.5, 9.0, 12.0):  # job 3 opens its clients at 4 s and closes them at 9 s
        step([sim], clock, t1 - t0)
        for d, dev in enumerate(devices):
            got = {p.pid: p.sm_util_pct for p in src.read(dev, slow=False).processes}
            want = {job_pid(j, job.devices.index(d)): truth_pct(clients, sc, j, d, t0, t1)
                    for j, job in enumerate(sc.jobs) if d in job.devices and job.active(t1)}
            assert got.keys() == want.keys(), (t1, d)
            for pid in want:  # amdgpu's engines are nanoseconds: exact to the ns floor
                assert got[pid] == pytest.approx(want[pid], rel=1e-6, abs=1e-6), (t1, d, pid)
        t0 = t1
    procs = {p.pid: p for p in src.read(devices[0], slow=False).processes}
    # job 1: 0.6 of 1.5 shares, 60 % of the VRAM to the shares
    assert procs[job_pid(0, 0)].used_memory_bytes == pytest.approx(192 * 2**30 * 0.6 * 0.4, rel=1e-4)


def test_rocm_processes_seen_through_the_kfd_hold_the_gpu_with_their_vram_and_no_share(tmp_path):
    """HIP compute is on /dev/kfd queues: its DRM client prints no engine line (read as 'used nothing');
    the KFD's vram_<gpu_id> says it holds the card, so it gets its VRAM and no share (split by memory)."""
    sc, sim, clients, clock, src = amd_node(tmp_path, {"devices": [{"model": MI300X, "count": 2, "power": STEPS}],
                                                        "jobs": [{"id": "1", "devices": [0]}]})
    kfd = tmp_path / "sys/sys/class/kfd/kfd"  # the simulator's topology: a CPU node, then the cards
    (first,), (second,) = sim.kfd_gpu_ids
    rocm = kfd / "proc/4242"
    rocm.mkdir(parents=True)
    (rocm / f"vram_{first}").write_text("8589934592\n")
    (rocm / f"vram_{second}").write_text("0\n")  # a pdd on the other card, nothing held there
    (kfd / "proc/4243").mkdir()  # gone between the listing and the read: left out
    assert KfdProcesses(tmp_path / "sys").gpu_ids("0000:11:00.0") == (str(first),)
    devices = src.open()
    for d in devices:
        src.read(d, slow=False)  # the first scan: no interval yet
    step([sim], clock, 2.0)
    procs = {p.pid: p for p in src.read(devices[0], slow=False).processes}
    assert set(procs) == {job_pid(0, 0), 4242}
    assert procs[4242].used_memory_bytes == 8 * 2**30 and procs[4242].sm_util_pct is None
    assert procs[job_pid(0, 0)].sm_util_pct == pytest.approx(100 * (1 + DMA_SHARE), rel=1e-6)
    assert src.read(devices[1], slow=False).processes == []


def conserved(snap):
    jobs = {j.job.id: j for j in snap.attribution.jobs}
    buckets = snap.attribution.gpus.values()
    energy = math.fsum(d.counters.energy_j for d in snap.devices)
    alloc = math.fsum(j.energy_allocated_j for j in jobs.values()) + math.fsum(b.unallocated_j for b in buckets)
    active = math.fsum(j.energy_active_j for j in jobs.values()) + math.fsum(b.idle_j + b.unattributed_j
                                                                              for b in buckets)
    assert alloc == pytest.approx(energy, rel=1e-9, abs=1e-9) and active == pytest.approx(energy, rel=1e-9, abs=1e-9)
    return jobs


def test_a_mixed_nodes_jobs_split_across_vendors_conserve_energy_exactly(tmp_path):
    """NVIDIA through NVML's process list, AMD and Intel through their DRM clients, one /proc, one
    scanner: a job on all three vendors' GPUs, two sharing the MI300X by engine time."""
    data = {"devices": [{"model": H100, "power": STEPS}, {"model": MI300X, "power": STEPS},
                        {"model": MAX, "power": STEPS}],
            "jobs": [{"id": "x", "devices": [0, 1, 2], "share": 0.5}, {"id": "y", "devices": [1], "share": 0.25}]}
    clock = ManualClock()
    sc = parse_scenario(data, "<test>")
    proc = write_procfs(sc, tmp_path / "proc")
    amd = AmdgpuSimulator(tmp_path / "amd", [sc.devices[1]])
    amd.attach_clients(sc, proc)
    intel = IntelGpuSimulator(sc, tmp_path / "intel", proc)
    for sim in (amd, intel):
        sim.update(0.0)
    scanner = DrmClientScanner(proc, tmp_path / "intel", clock=clock)
    sources = [NvmlSource(SimulatedNvml(sc, lambda: clock.sim), read_processes=True, clock=clock),
               AmdgpuSource(tmp_path / "amd", clock=clock, clients=scanner, read_processes=True),
               IntelGpuSource(tmp_path / "intel", clients=scanner, read_processes=True, clock=clock)]
    snap = slurm_meter_run(sources, proc, clock, [amd, intel], 15, pue=1.2)
    assert [d.identity.vendor for d in snap.devices] == ["nvidia", "amd", "intel"]
    jobs = conserved(snap)
    # (each source numbers its GPUs from 0: the job's gpus read {"0"}; the buckets are by uuid)
    assert set(snap.attribution.gpus) == {d.identity.uuid for d in snap.devices}
    assert snap.attribution.gpus[snap.devices[1].identity.uuid].method == "sm"
    assert all(j.energy_allocated_j > 0 for j in jobs.values())
    assert jobs["x"].gpus == {("nvidia", "0"), ("amd", "0"), ("intel", "0")} and jobs["y"].gpus == {("amd", "0")}


def test_jobs_on_nvidia_gpu_0_and_amd_gpu_0_are_told_apart_and_each_gets_its_gpus_energy(tmp_path):
    """Each vendor's source numbers its GPUs from 0: job 1 alone on NVIDIA GPU 0, job 2 alone on AMD
    GPU 0. The exposition shows one gpu_carbon_job_gpu_info series for each, by vendor, and each
    job's energy is its GPU's, whole: against the simulator's closed form, to the counters'
    resolution (NVML's mJ, amdgpu's 15.3 µJ)."""
    from gpu_carbon_exporter.collector import SnapshotCollector
    from gpu_carbon_exporter.sim.scenario import GroundTruth

    data = {"devices": [{"model": H100, "power": STEPS},
                        {"model": MI300X, "power": {"pattern": "steps", "steps": [[0, 160], [5, 730]]}}],
            "jobs": [{"id": "1", "devices": [0]}, {"id": "2", "devices": [1]}]}
    clock = ManualClock()
    sc = parse_scenario(data, "<test>")
    proc = write_procfs(sc, tmp_path / "proc")
    amd = AmdgpuSimulator(tmp_path / "amd", [sc.devices[1]])
    amd.attach_clients(sc, proc)
    amd.update(0.0)
    sources = [NvmlSource(SimulatedNvml(sc, lambda: clock.sim), read_processes=True, clock=clock),
               AmdgpuSource(tmp_path / "amd", clock=clock, clients=DrmClientScanner(proc, clock=clock),
                            read_processes=True)]
    snap = slurm_meter_run(sources, proc, clock, [amd], 12)
    assert [(d.identity.vendor, d.identity.index) for d in snap.devices] == [("nvidia", 0), ("amd", 0)]
    held = {(s.labels["job_id"], s.labels["vendor"], s.labels["gpu"])
            for m in SnapshotCollector(lambda: snap, clock=clock).collect() for s in m.samples
            if s.name == "gpu_carbon_job_gpu_info"}
    assert held == {("1", "nvidia", "0"), ("2", "amd", "0")}
    jobs = conserved(snap)
    truth = GroundTruth(sc)
    for job, dev, resolution in ((sc.jobs[0], snap.devices[0], 1e-3), (sc.jobs[1], snap.devices[1], 2**-16)):
        gpu_j = truth.device_energy_j(job.devices[0], 0.0, 12.0)
        # alone on it: the GPU's, to float rounding (active + idle share)
        assert jobs[job.id].energy_allocated_j == pytest.approx(dev.counters.energy_j, rel=1e-12)
        assert abs(dev.counters.energy_j - gpu_j) <= resolution + 1e-9, (job.id, dev.counters.energy_j, gpu_j)
        assert truth.job_allocated_j(job, 0.0, 12.0) == pytest.approx(gpu_j, rel=1e-12)
    assert jobs["1"].energy_allocated_j != pytest.approx(jobs["2"].energy_allocated_j, rel=0.05)


def test_the_mi300x_scenarios_jobs_split_by_engine_time_and_conserve_exactly(tmp_path):
    start = 60.0
    sc = load_scenario("mi300x")
    clock = ManualClock()
    proc = write_procfs(sc, tmp_path / "proc")
    sim = AmdgpuSimulator(tmp_path / "sys", sc.devices)
    sim.attach_clients(sc, proc)
    sim.update(start)
    src = AmdgpuSource(tmp_path / "sys", clock=clock, clients=DrmClientScanner(proc, clock=clock), read_processes=True)
    acfg = parse_config({"attribution": {"mappers": "slurm", "slurm_environ": True,
                                         "idle_watts": {MI300X: 138.0}}})["attribution"]
    meter = Meter([src], StaticIntensity("Z", 300.0), clock=clock, attribution=build_attribution(acfg, proc_root=proc))
    meter.open()
    meter.sample()
    for _ in range(60):  # the training job 8101 starts at 90 s
        step([sim], clock, 1.0, at=start)
        meter.sample()
    snap = meter.snapshot
    for d, dev in zip(sc.devices, snap.devices):
        assert abs(dev.counters.energy_j - (d.pattern.energy(start + 60) - d.pattern.energy(start))) <= 2**-16 + 1e-9
    jobs = conserved(snap)
    assert set(jobs) == {"8101", "8102", "8103"} and jobs["8101"].gpus == {("amd", str(i)) for i in range(6)}
    assert jobs["8102"].energy_active_j / jobs["8103"].energy_active_j == pytest.approx(0.6 / 0.4, rel=1e-6)


def test_an_accumulator_that_never_advances_is_caught_at_start_and_the_card_integrates(tmp_path, caplog):
    """Zeus's check (the MI100's stuck counter, ROCm/amdsmi#38): over 0.5 s at start-up the energy must
    be within 0.1-10x of power x time; the frozen card integrates its power1_average, the others keep
    their counters."""
    clock = ManualClock()
    constant = {"pattern": "constant", "watts": 200}
    sc = parse_scenario({"devices": [{"model": MI100, "count": 2, "power": constant},
                                     {"model": MI300X, "power": constant}]}, "<test>")
    sim = AmdgpuSimulator(tmp_path, sc.devices)
    sim.update(5.0)
    sim.freeze_counter(0, 5.0)

    def sleep(seconds):
        step([sim], clock, seconds, at=5.0)

    src = AmdgpuSource(tmp_path, clock=clock, sleep=sleep)
    with caplog.at_level(logging.WARNING):
        frozen, ok, mi300x = src.open()
    assert not frozen.has_energy_counter and frozen.method_without_counter == "integrated_average"
    assert frozen.energy_wrap_mj is None
    assert ok.has_energy_counter and mi300x.has_energy_counter
    assert "AMD GPU 0 (0000:11:00.0, card1)" in caplog.text and "broken counter" in caplog.text
    assert "AMD GPU 1" not in caplog.text
    meter = Meter([src], StaticIntensity("Z", 300.0), clock=clock)
    meter.open()
    meter.sample()
    for n in range(1, 101):
        step([sim], clock, 0.1, at=5.0)
        meter.sample() if n % 10 == 0 else meter.integrate()
    methods = [d.method for d in meter.snapshot.devices]
    assert methods[0] in ("integrated", "integrated_average") and methods[1:] == ["counter", "counter"]
    assert meter.snapshot.devices[0].counters.energy_j == pytest.approx(200 * 10, rel=0.01)


def test_jobs_on_two_partitions_of_one_card_are_the_cards_holders_its_energy_counted_once(tmp_path):
    """An MI300X in CPX: eight DRM card nodes and eight KFD nodes (gpu_ids) at one PCI address. One
    device, one energy; ROCm processes on partitions 0 and 5 both hold the card, with their VRAM; a
    garbage or vanished vram file leaves only that entry out."""
    sim = AmdgpuSimulator(tmp_path, parse_scenario({"devices": [{"model": MI300X, "power": STEPS}]},
                                                   "<t>").devices, xcp_partitions=8)
    kfd = tmp_path / "sys/class/kfd/kfd"  # the simulator's topology: eight nodes at the card's address
    (gpu_ids,) = sim.kfd_gpu_ids
    for pid, part, held in ((501, 0, "1073741824"), (502, 5, "2147483648"), (503, 2, "garbage")):
        (kfd / f"proc/{pid}").mkdir(parents=True)
        (kfd / f"proc/{pid}/vram_{gpu_ids[part]}").write_text(f"{held}\n")
    src = AmdgpuSource(tmp_path, clock=ManualClock(), read_processes=True)
    (dev,) = src.open()
    assert len(KfdProcesses(tmp_path).gpu_ids(dev.pci_bus_id)) == 8
    reading = src.read(dev, slow=False)
    assert [(p.pid, p.used_memory_bytes, p.sm_util_pct) for p in reading.processes] == [
        (501, 2**30, None), (502, 2**31, None)]
    card = sim.devices[0]
    assert reading.energy_mj == pytest.approx(card.pattern.energy(0.0) * 1000 + card.energy_offset_mj, abs=0.02)


CPX = {"devices": [{"model": MI300X, "count": 2, "power": STEPS}],
       "jobs": [{"id": "1", "devices": [0], "share": 0.5}, {"id": "2", "devices": [0], "share": 0.3},
                {"id": "3", "devices": [0], "share": 0.2}, {"id": "4", "devices": [1], "share": 0.25},
                {"id": "5", "devices": [1], "share": 0.5}]}


def cpx_node(tmp_path):
    """Two MI300X in CPX (eight partitions each): jobs 1-3 on card 0's partitions 0, 1 and 2, jobs 4 and 5
    on card 1's partitions 0 and 1."""
    clock = ManualClock()
    sc = parse_scenario(CPX, "<test>")
    proc = write_procfs(sc, tmp_path / "proc")
    sim = AmdgpuSimulator(tmp_path / "sys", sc.devices, xcp_partitions=8)
    clients = sim.attach_clients(sc, proc)
    scanner = DrmClientScanner(proc, tmp_path / "sys", clock=clock)
    return sc, sim, clients, clock, AmdgpuSource(tmp_path / "sys", clock=clock, clients=scanner, read_processes=True)


def test_processes_on_partitions_of_one_card_are_its_holders_split_by_engine_time(tmp_path):
    """A partition's render node is a platform device (amdgpu_xcp.N) and its clients print no drm-pdev: the
    KFD topology node with that render minor gives the card's PCI address."""
    sc, sim, clients, clock, src = cpx_node(tmp_path)
    pid = job_pid(1, 0)  # job 2, on card 0's partition 1
    node = os.readlink(tmp_path / f"proc/{pid}/fd/{FD_DRM}").rsplit("/", 1)[-1]
    assert node == sim.render_nodes[0][1] and "drm-pdev" not in (tmp_path / f"proc/{pid}/fdinfo/{FD_DRM}").read_text()
    assert (tmp_path / "sys/sys/class/drm" / node / "device").resolve().name.startswith("amdgpu_xcp.")
    devices = src.open()
    assert len(devices) == 2  # one device per card, whatever its partitions
    for d in devices:
        src.read(d, slow=False)  # the first scan: no interval yet
    t0 = 0.0
    for t1 in (1.0, 2.5, 6.0):
        step([sim], clock, t1 - t0)
        for d, dev in enumerate(devices):
            got = {p.pid: p.sm_util_pct for p in src.read(dev, slow=False).processes}
            want = {job_pid(j, 0): truth_pct(clients, sc, j, d, t0, t1) for j, job in enumerate(sc.jobs)
                    if d in job.devices}
            assert got.keys() == want.keys() and len(want) in (2, 3), (t1, d)
            for p in want:
                assert got[p] == pytest.approx(want[p], rel=1e-6, abs=1e-6), (t1, d, p)
        t0 = t1
    assert src.clients.take_run().success


def test_the_cards_energy_goes_to_its_partitions_jobs_by_engine_time_once(tmp_path):
    sc, sim, clients, clock, src = cpx_node(tmp_path)
    snap = slurm_meter_run([src], str(tmp_path / "proc"), clock, [sim], 12)
    jobs = conserved(snap)
    assert set(jobs) == {"1", "2", "3", "4", "5"} and snap.collectors["drm_clients"].success
    assert [snap.attribution.gpus[d.identity.uuid].method for d in snap.devices] == ["sm", "sm"]
    assert jobs["1"].energy_active_j / jobs["2"].energy_active_j == pytest.approx(0.5 / 0.3, rel=0.02)
    assert jobs["5"].energy_active_j / jobs["4"].energy_active_j == pytest.approx(0.5 / 0.25, rel=0.02)


def test_without_the_kfd_topology_a_partitions_clients_are_left_out_visibly(tmp_path, caplog):
    sc, sim, clients, clock, src = cpx_node(tmp_path)
    shutil.rmtree(tmp_path / "sys/sys/class/kfd")  # no KFD (amdgpu without compute support)
    devices = src.open()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            procs = {p.pid for p in src.read(devices[0], slow=False).processes}
            step([sim], clock, 1.0)
    assert procs == {job_pid(0, 0)}  # partition 0's client names its PCI device itself
    assert src.clients.take_run().success is False
    node = sim.render_nodes[0][1]
    assert f"{tmp_path}/proc/{job_pid(1, 0)}/fdinfo/{FD_DRM}: no drm-pdev" in caplog.text
    assert f"/dev/dri/{node} to a PCI device" in caplog.text

"""Per-process GPU usage from DRM client usage stats (attribution/fdinfo.py): parsing, de-duplication,
shares against the simulated engine-time truth (sim/intel.py), bad input, and jobs' energy through
the meter and the attribution engine, conserved exactly."""
import logging
import math
import os
from typing import Callable

import pytest

from gpu_carbon_exporter.attribution.fdinfo import DrmClientScanner, parse_fdinfo
from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.config import parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.intel import CHILD_PID_OFFSET, COPY_SHARE, FD_DRM, IntelGpuSimulator, pci_address
from gpu_carbon_exporter.sim.procfs import write_procfs
from gpu_carbon_exporter.sim.scenario import parse_scenario
from gpu_carbon_exporter.sim.trace import job_pid
from gpu_carbon_exporter.sources.intel_gpu import IntelGpuSource
from gpu_carbon_exporter.startup import build_attribution

from conftest import ManualClock

MAX = "Intel Data Center GPU Max 1550"
XE = """pos:\t0
flags:\t02100002
mnt_id:\t26
ino:\t1013
drm-driver:\txe
drm-client-id:\t42
drm-pdev:\t0000:3A:00.0
drm-total-system:\t2048 KiB
drm-resident-system:\t2048 KiB
drm-total-vram0:\t3 MiB
drm-resident-vram0:\t3 MiB
drm-cycles-bcs:\t100
drm-total-cycles-bcs:\t9000
drm-cycles-ccs:\t7000
drm-total-cycles-ccs:\t9000
drm-engine-capacity-ccs:\t4
"""
I915 = """pos:\t0
flags:\t02100002
drm-driver:\ti915
drm-pdev:\t0000:3a:00.0
drm-client-id:\t7
drm-engine-render:\t0 ns
drm-engine-copy:\t1500 ns
drm-engine-video:\t0 ns
drm-engine-capacity-video:\t2
drm-engine-compute:\t123456789 ns
drm-engine-capacity-compute:\t4
drm-resident-local0:\t1024 KiB
"""
AMDGPU = """drm-driver:\tamdgpu
drm-pdev:\t0000:c1:00.0
drm-client-id:\t17
pasid:\t32770
drm-memory-vram:\t4096 KiB
drm-memory-gtt:\t2048 KiB
amd-evicted-vram:\t0 KiB
"""
SHARED = {"devices": [{"model": MAX, "power": {"pattern": "constant", "watts": 450}},
                      {"model": MAX, "driver": "i915", "power": {"pattern": "constant", "watts": 300}}],
          "jobs": [{"id": "1", "devices": [0], "share": 0.6}, {"id": "2", "devices": [0], "share": 0.4},
                   {"id": "3", "devices": [0, 1], "start_s": 4, "end_s": 9, "share": 0.5},
                   {"id": "4", "devices": [1], "share": 0.25}]}


def test_parse_the_keys_of_each_driver():
    xe = parse_fdinfo(XE)
    assert (xe.driver, xe.pdev, xe.client_id) == ("xe", "0000:3a:00.0", "42")  # the address lower-cased
    assert xe.cycles == {"bcs": 100, "ccs": 7000} and xe.total_cycles == {"bcs": 9000, "ccs": 9000}
    assert xe.capacity == {"ccs": 4} and xe.engine_ns == {}
    assert xe.resident_bytes == {"system": 2048 * 1024, "vram0": 3 * 1024**2} and not xe.bad_lines
    i915 = parse_fdinfo(I915)
    assert i915.engine_ns == {"render": 0, "copy": 1500, "video": 0, "compute": 123456789}
    assert i915.capacity == {"video": 2, "compute": 4} and i915.resident_bytes == {"local0": 1024 * 1024}
    amd = parse_fdinfo(AMDGPU)  # no engine line: amdgpu prints an engine once it has been busy
    assert amd.resident_bytes == {"vram": 4096 * 1024, "gtt": 2048 * 1024} and not amd.has_usage
    assert parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t26\n") is None  # not a DRM file, or no usage stats
    bad = parse_fdinfo(XE + "drm-cycles-rcs:\tmany\ndrm-engine-video:\t12 furlongs\n\x00\xff garbage\n")
    assert bad.bad_lines == 2 and bad.cycles == xe.cycles  # the bad lines left out, the rest kept


def node(tmp_path, data=SHARED):
    clock = ManualClock()
    sc = parse_scenario(data, "<test>")
    proc = write_procfs(sc, tmp_path / "proc")
    sim = IntelGpuSimulator(sc, tmp_path / "sys", proc)
    sim.update(0.0)
    return sc, sim, clock, DrmClientScanner(proc, tmp_path / "sys", clock=clock)


def step(sim, clock, seconds):
    clock.advance(seconds)
    sim.update(clock.sim)


def truth_pct(sim, sc, j, d, t0, t1):
    """A job's percent of [t0, t1] on card d: its compute utilisation plus a tenth of it on copy."""
    job, dev = sc.jobs[j], sc.devices[d]
    busy = sum(b - a for a, b in job.intervals(t0, t1))
    return 100 * (1 + COPY_SHARE) * sim.rate(job, dev) * busy / (t1 - t0)


def test_per_process_shares_match_the_simulated_engine_time(tmp_path):
    sc, sim, clock, scanner = node(tmp_path)
    pcis = [pci_address(d) for d in sc.devices]
    first = scanner.usage(pcis[0])
    assert first.busy_pct is None and all(p.sm_util_pct is None for p in first.processes)  # no interval yet
    scanner.usage(pcis[1])
    t0 = 0.0
    for t1 in (1.0, 4.0, 5.5, 9.0, 12.0):  # job 3 opens its clients at 4 s and closes them at 9 s
        step(sim, clock, t1 - t0)
        usage = [scanner.usage(p) for p in pcis]
        for d, u in enumerate(usage):
            got = {p.pid: p.sm_util_pct for p in u.processes}
            want = {job_pid(j, job.devices.index(d)): truth_pct(sim, sc, j, d, t0, t1)
                    for j, job in enumerate(sc.jobs) if d in job.devices and job.active(t1)}
            assert got.keys() == want.keys(), (t1, d)
            for pid in want:  # the ns engines (i915) exact; xe's cycles to one cycle of 19.2 MHz
                assert got[pid] == pytest.approx(want[pid], rel=1e-6, abs=1e-5), (t1, d, pid)
        t0 = t1
    # At 12 s GPU 0 has jobs 1 and 2 (0.6 and 0.4 of 1.5 in all): its compute engines two thirds busy.
    assert usage[0].busy_pct == pytest.approx(100 * 1.0 / 1.5, rel=1e-6)


def test_a_client_shared_by_two_fds_and_a_forked_child_counts_once_for_the_lowest_pid(tmp_path):
    sc, sim, clock, scanner = node(tmp_path)
    parent = job_pid(0, 0)
    child = tmp_path / "proc" / str(parent + CHILD_PID_OFFSET)
    assert os.readlink(child / "fd" / str(FD_DRM)) == os.readlink(tmp_path / "proc" / str(parent) / "fd" / "8")
    scanner.usage(pci_address(sc.devices[0]))
    step(sim, clock, 2.0)
    procs = {p.pid: p for p in scanner.usage(pci_address(sc.devices[0])).processes}
    assert parent in procs and parent + CHILD_PID_OFFSET not in procs
    assert procs[parent].sm_util_pct == pytest.approx(truth_pct(sim, sc, 0, 0, 0.0, 2.0), rel=1e-6)
    assert procs[parent].used_memory_bytes == pytest.approx(sc.devices[0].model.memory_bytes * 0.6 * 0.4, rel=1e-4)


def test_a_vanished_process_or_closed_file_is_left_out_the_others_unchanged(tmp_path):
    sc, sim, clock, scanner = node(tmp_path)
    pci = pci_address(sc.devices[0])
    scanner.usage(pci)
    step(sim, clock, 1.0)
    gone = job_pid(1, 0)
    for fd in ("7", "8"):  # listed, then gone before its fdinfo is read (the process exited)
        (tmp_path / "proc" / str(gone) / "fdinfo" / fd).unlink()
    procs = {p.pid: p.sm_util_pct for p in scanner.usage(pci).processes}
    assert gone not in procs
    assert procs[job_pid(0, 0)] == pytest.approx(truth_pct(sim, sc, 0, 0, 0.0, 1.0), rel=1e-6)


def test_a_driver_without_usage_stats_leaves_that_process_without_a_share(tmp_path, caplog):
    sc, sim, clock, scanner = node(tmp_path)
    pci = pci_address(sc.devices[1])
    scanner.usage(pci)
    step(sim, clock, 1.0)
    d = tmp_path / "proc" / "4242"
    (d / "fd").mkdir(parents=True)
    (d / "fdinfo").mkdir()
    os.symlink("/dev/dri/renderD129", d / "fd" / "5")  # a kernel that prints no drm- keys at all (before 5.19)
    (d / "fdinfo" / "5").write_text("pos:\t0\nflags:\t02\nmnt_id:\t26\n")
    os.symlink("/dev/dri/renderD129", d / "fd" / "6")  # a client with its identity but no engine keys
    (d / "fdinfo" / "6").write_text(f"drm-driver:\ti915\ndrm-pdev:\t{pci}\ndrm-client-id:\t999\n")
    with caplog.at_level(logging.WARNING):
        usage = scanner.usage(pci)
    procs = {p.pid: p.sm_util_pct for p in usage.processes}
    assert 4242 in procs and procs[4242] is None  # it holds the GPU (found through sysfs), no share known
    assert procs[job_pid(3, 0)] == pytest.approx(truth_pct(sim, sc, 3, 1, 0.0, 1.0), rel=1e-6)
    assert "4242/fdinfo/5" in caplog.text and "no DRM client usage stats" in caplog.text
    assert usage.busy_pct == pytest.approx(25.0, rel=1e-6)  # what the others used still shows


def test_garbage_lines_and_counters_that_go_down_degrade_that_client_only(tmp_path, caplog):
    sc, sim, clock, scanner = node(tmp_path)
    pci = pci_address(sc.devices[1])  # i915: job 4's client
    fds = [tmp_path / "proc" / str(job_pid(3, 0)) / "fdinfo" / fd for fd in ("7", "8")]  # one client, two files

    def write(text):
        for path in fds:
            path.write_text(text)

    scanner.usage(pci)
    step(sim, clock, 1.0)
    scanner.usage(pci)
    step(sim, clock, 1.0)
    good = fds[0].read_text()
    write(good.replace("drm-engine-copy:", "drm-engine-copy: lots\nx") + "\x00\x01 noise\n")
    with caplog.at_level(logging.WARNING):
        procs = {p.pid: p.sm_util_pct for p in scanner.usage(pci).processes}
    assert procs[job_pid(3, 0)] == pytest.approx(100 * 0.25 * 1.0, rel=1e-6)  # compute still counted, copy left out
    assert "fdinfo/7: 1 line(s)" in caplog.text or "fdinfo/8: 1 line(s)" in caplog.text
    step(sim, clock, 1.0)
    scanner.usage(pci)
    step(sim, clock, 0.0)
    write(good)  # the counters go back to what they were a second ago
    procs = {p.pid: p.sm_util_pct for p in scanner.usage(pci).processes}
    assert procs[job_pid(3, 0)] == 0.0  # the larger value is kept: nothing negative, nothing twice


def test_an_amdgpu_client_without_engine_lines_used_nothing(tmp_path):
    proc = tmp_path / "proc"
    (proc / "77" / "fd").mkdir(parents=True)
    (proc / "77" / "fdinfo").mkdir()
    os.symlink("/dev/dri/renderD128", proc / "77" / "fd" / "9")
    (proc / "77" / "fdinfo" / "9").write_text(AMDGPU)
    clock = ManualClock()
    scanner = DrmClientScanner(proc, tmp_path, clock=clock)
    scanner.usage("0000:c1:00.0")
    clock.advance(1.0)
    (p,) = scanner.usage("0000:C1:00.0").processes
    assert (p.pid, p.sm_util_pct, p.used_memory_bytes) == (77, 0.0, 4096 * 1024)


def deny_fd_listing(locked: str, monkeypatch) -> Callable[[], None]:
    """The fd directory ``locked`` answers EACCES, as another user's process does without
    CAP_SYS_PTRACE (as root, chmod denies nothing); returns what undoes it."""
    from gpu_carbon_exporter.attribution import fdinfo

    listdir = os.listdir

    def denying(path):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return listdir(path)

    monkeypatch.setattr(fdinfo.os, "listdir", denying)
    return lambda: monkeypatch.setattr(fdinfo.os, "listdir", listdir)


def test_processes_whose_files_cannot_be_read_are_named_once(tmp_path, caplog, monkeypatch):
    """Another user's process, without CAP_SYS_PTRACE: its fd directory cannot be listed (EACCES)."""
    sc, sim, clock, scanner = node(tmp_path)
    deny_fd_listing(str(tmp_path / "proc" / str(job_pid(0, 0)) / "fd"), monkeypatch)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            scanner.usage(pci_address(sc.devices[0]))
            step(sim, clock, 1.0)
        procs = {p.pid for p in scanner.usage(pci_address(sc.devices[0])).processes}
    assert job_pid(0, 0) not in procs and job_pid(1, 0) in procs
    assert caplog.text.count("permission denied") == 1 and "CAP_SYS_PTRACE" in caplog.text


def test_jobs_on_intel_gpus_split_by_engine_time_and_conserve_energy_exactly(tmp_path):
    sc, sim, clock, scanner = node(tmp_path, {**SHARED, "zone": "Z", "intensity": {"Z": [[0, 300]]}})
    acfg = parse_config({"attribution": {"mappers": "slurm", "slurm_environ": True,
                                         "idle_watts": {MAX: 95.0}}})["attribution"]
    att = build_attribution(acfg, proc_root=str(tmp_path / "proc"))
    src = IntelGpuSource(tmp_path / "sys", clients=scanner, read_processes=True, clock=clock)
    meter = Meter([src], StaticIntensity("Z", 300.0), pue=1.2, clock=clock, attribution=att)
    meter.open()
    meter.sample()
    for _ in range(20):
        step(sim, clock, 1.0)
        meter.sample()
    snap = meter.snapshot
    jobs = {j.job.id: j for j in snap.attribution.jobs}
    assert set(jobs) == {"1", "2", "3", "4"} and jobs["3"].gpus == {("intel", "0"), ("intel", "1")}
    # Job 3 holds both GPUs, so the parts add up over the node: every joule a job's or a remainder.
    buckets = snap.attribution.gpus.values()
    energy = math.fsum(d.counters.energy_j for d in snap.devices)
    alloc = math.fsum(j.energy_allocated_j for j in jobs.values()) + math.fsum(b.unallocated_j for b in buckets)
    active = math.fsum(j.energy_active_j for j in jobs.values()) + math.fsum(b.idle_j + b.unattributed_j
                                                                              for b in buckets)
    assert alloc == pytest.approx(energy, rel=1e-9) and active == pytest.approx(energy, rel=1e-9)
    grams = math.fsum(j.emissions_allocated_g for j in jobs.values()) + math.fsum(b.unallocated_g for b in buckets)
    assert grams == pytest.approx(math.fsum(d.counters.emissions_g for d in snap.devices), rel=1e-9)
    assert energy == pytest.approx(20 * (450 + 300), abs=2 * 2**-14)  # the cards' own integrals
    assert [snap.attribution.gpus[d.identity.uuid].method for d in snap.devices] == ["sm", "exclusive"]
    # Jobs 1 and 2 share GPU 0 by their engine time, 0.6 : 0.4, whoever else comes and goes.
    active = {k: jobs[k].energy_active_j for k in ("1", "2")}
    assert active["1"] / active["2"] == pytest.approx(0.6 / 0.4, rel=0.02)

"""The DRM client stats' health (attribution/fdinfo.py): a collector of its own, collector="drm_clients".
Each bad input (an unreadable /proc, a process whose files are denied, garbage in a client's stats, a
process that exits mid-scan), over the simulated Intel node's /proc and the real meter: only the
per-process split degrades, the metric shows it (a vanished process is no failure), the cards' energy
is their own integral, every job's energy only grows and every joule is a job's or a remainder's."""
import logging
import math
import os
import shutil

import pytest

from gpu_carbon_exporter.attribution import fdinfo
from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.collector import SnapshotCollector
from gpu_carbon_exporter.config import parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.intel import FD_DRM, FD_DUP
from gpu_carbon_exporter.sim.trace import job_pid
from gpu_carbon_exporter.sources.intel_gpu import IntelGpuSource
from gpu_carbon_exporter.startup import build_attribution

from test_fdinfo import MAX, SHARED, deny_fd_listing, node, step, truth_pct

DATA = {**SHARED, "zone": "Z", "intensity": {"Z": [[0, 300]]}}
WATTS = (450, 300)  # the two cards' constant power


def metered(tmp_path):
    sc, sim, clock, scanner = node(tmp_path, DATA)
    acfg = parse_config({"attribution": {"mappers": "slurm", "slurm_environ": True,
                                         "idle_watts": {MAX: 95.0}}})["attribution"]
    att = build_attribution(acfg, proc_root=str(tmp_path / "proc"))
    src = IntelGpuSource(tmp_path / "sys", clients=scanner, read_processes=True, clock=clock)
    meter = Meter([src], StaticIntensity("Z", 300.0), clock=clock, attribution=att)
    meter.open()
    meter.sample()
    return sc, sim, clock, meter


def exposed_success(meter):
    """collector="drm_clients"'s success as the collector renders it, or None where it is not listed."""
    for family in SnapshotCollector(lambda: meter.snapshot).collect():
        if family.name == "gpu_carbon_collector_success":
            return next((s.value for s in family.samples if s.labels["collector"] == "drm_clients"), None)
    raise AssertionError("no gpu_carbon_collector_success family")


def check_shares(meter, sc, sim, n):
    """Each running job's share of the last second on each card: unknown or degraded, never more than the
    truth; the truth exactly before the fault and from the second sample after it."""
    for d, dev in enumerate(meter.snapshot.devices):
        holders = {p.pid: p.sm_util_pct for p in dev.reading.processes or ()}
        for j, job in enumerate(sc.jobs):
            if d not in job.devices or not job.active(n):
                continue
            pid, truth = job_pid(j, job.devices.index(d)), truth_pct(sim, sc, j, d, n - 1.0, n)
            assert holders.get(pid) is None or holders[pid] <= truth * (1 + 1e-6) + 1e-5, (n, d, pid)
            if n >= 9 or n <= 3:
                assert holders[pid] == pytest.approx(truth, rel=1e-6, abs=1e-5), (n, d, pid)


def check_accounting(meter, seconds, before):
    """The cards' energy their own integral; each job's energy never down; every joule accounted once."""
    snap = meter.snapshot
    energy = math.fsum(d.counters.energy_j for d in snap.devices)
    assert energy == pytest.approx(seconds * sum(WATTS), abs=2 * 2**-14)
    jobs = {j.job.id: j for j in snap.attribution.jobs}
    for key, (alloc, active) in before.items():
        assert jobs[key].energy_allocated_j >= alloc and jobs[key].energy_active_j >= active, key
    buckets = snap.attribution.gpus.values()
    alloc = math.fsum(j.energy_allocated_j for j in jobs.values()) + math.fsum(b.unallocated_j for b in buckets)
    active = math.fsum(j.energy_active_j for j in jobs.values()) + math.fsum(b.idle_j + b.unattributed_j
                                                                              for b in buckets)
    assert alloc == pytest.approx(energy, rel=1e-9) and active == pytest.approx(energy, rel=1e-9)
    return {k: (j.energy_allocated_j, j.energy_active_j) for k, j in jobs.items()}


def unreadable_proc(tmp_path, monkeypatch):
    """The /proc the scanner reads cannot be listed (moved away: the mappers lose it too)."""
    os.rename(tmp_path / "proc", tmp_path / "proc.away")
    return lambda: os.rename(tmp_path / "proc.away", tmp_path / "proc")


def denied(tmp_path, monkeypatch):
    """Job 1's process belongs to another user: its fd directory is EACCES (as root, chmod denies nothing)."""
    return deny_fd_listing(str(tmp_path / "proc" / str(job_pid(0, 0)) / "fd"), monkeypatch)


def _garble(tmp_path, pid, key):
    for fd in (FD_DRM, FD_DUP):
        path = tmp_path / "proc" / str(pid) / "fdinfo" / str(fd)
        text = path.read_text()
        assert f"{key}:" in text
        path.write_text(text.replace(f"{key}:\t", f"{key}:\tmany ") + "\x00\xff noise\n")
    return lambda: None  # the simulator writes the stats afresh at its next update


def garbage(tmp_path, monkeypatch):
    """Job 2's client on card 0 (xe) prints its compute cycles as garbage."""
    return _garble(tmp_path, job_pid(1, 0), "drm-cycles-ccs")


def garbage_i915(tmp_path, monkeypatch):
    """Job 4's client on card 1 (i915) prints its compute nanoseconds as garbage."""
    return _garble(tmp_path, job_pid(3, 0), "drm-engine-compute")


def vanished(tmp_path, monkeypatch):
    """Job 2's process exits between the listing of its fds and the read of their stats."""
    shutil.rmtree(tmp_path / "proc" / str(job_pid(1, 0)) / "fdinfo")
    return lambda: None  # the simulator lays the process out again at its next update


@pytest.mark.parametrize("fault, fails, lost, log_names", [
    (unreadable_proc, True, None, "cannot list {tmp}/proc: "),
    (denied, True, job_pid(0, 0), f"{{tmp}}/proc/{job_pid(0, 0)}/fd (permission denied)"),
    (garbage, True, None, f"{{tmp}}/proc/{job_pid(1, 0)}/fdinfo/"),
    (garbage_i915, True, None, f"{{tmp}}/proc/{job_pid(3, 0)}/fdinfo/"),
    (vanished, False, job_pid(1, 0), None),
])
def test_a_bad_input_degrades_the_split_only_and_shows_in_the_metric(tmp_path, monkeypatch, caplog, fault, fails,
                                                                     lost, log_names):
    sc, sim, clock, meter = metered(tmp_path)
    pid1, pid2 = job_pid(0, 0), job_pid(1, 0)
    before: dict = {}
    with caplog.at_level(logging.WARNING):
        for n in range(1, 13):  # the fault over samples 4 to 7, healed from sample 8 on
            step(sim, clock, 1.0)
            heal = fault(tmp_path, monkeypatch) if 4 <= n <= 7 else None
            meter.sample()
            status = meter.snapshot.collectors["drm_clients"]
            assert status.success is not (fails and heal is not None), n
            assert exposed_success(meter) == (0 if fails and heal is not None else 1), n
            assert status.last_time == meter.snapshot.mono and status.duration_s >= 0
            holders = {p.pid: p.sm_util_pct for p in meter.snapshot.devices[0].reading.processes or ()}
            if heal is not None and lost is not None:
                assert lost not in holders, n  # that process only is left out
                assert {pid1, pid2} - {lost} <= set(holders), n
            elif fault is not unreadable_proc or heal is None:
                assert {pid1, pid2} <= set(holders), n
            check_shares(meter, sc, sim, n)
            before = check_accounting(meter, n, before)
            if heal is not None:
                heal()
    if log_names is not None:
        assert log_names.format(tmp=tmp_path) in caplog.text
    assert "Traceback" not in caplog.text


def test_no_drm_clients_collector_where_no_source_reads_them(tmp_path):
    """Without a source that asks (no Intel or AMD GPU), the scanner never runs and is not listed."""
    sc, sim, clock, scanner = node(tmp_path, DATA)
    src = IntelGpuSource(tmp_path / "sys", clock=clock)
    meter = Meter([src], StaticIntensity("Z", 300.0), clock=clock)
    meter.open()
    meter.sample()
    assert "drm_clients" not in meter.snapshot.collectors and "intel_gpu" in meter.snapshot.collectors
    assert exposed_success(meter) is None


def test_a_scan_that_raises_is_a_failed_run(tmp_path, monkeypatch):
    sc, sim, clock, meter = metered(tmp_path)
    step(sim, clock, 1.0)

    def broken(text):
        raise RuntimeError("a bug")

    monkeypatch.setattr(fdinfo, "parse_fdinfo", broken)
    meter.sample()
    assert meter.snapshot.collectors["drm_clients"].success is False
    assert meter.snapshot.devices[0].counters.energy_j == pytest.approx(WATTS[0], abs=2**-14)

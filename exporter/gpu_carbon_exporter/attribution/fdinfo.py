"""Per-process GPU usage from the DRM client usage stats in ``/proc/PID/fdinfo``.

Drivers without a process list of their own (Intel xe and i915, AMD amdgpu) print, for every open
DRM file, its client's usage (the kernel's Documentation/gpu/drm-usage-stats.rst):

    drm-driver:      xe                       i915 / amdgpu: engine busy time in ns
    drm-pdev:        0000:3a:00.0             drm-engine-render:  123456 ns
    drm-client-id:   42                       drm-engine-capacity-video: 2
    drm-cycles-ccs:  4711                     xe: busy cycles, and the GPU timestamp they are counted
    drm-total-cycles-ccs: 9000000             against, in the same unit
    drm-engine-capacity-ccs: 4                drm-resident-vram0: 1024 KiB (amdgpu also drm-memory-vram)

A client is one open of the device (``struct drm_file``): fds dup'ed or passed to another process
(fork, SCM_RIGHTS) show the same client again, so clients are keyed by (drm-pdev, drm-client-id)
and each is counted once, for the lowest pid holding it. Clients are mapped to GPUs by PCI
address. A process's share of an interval is its clients' engine time over it: per engine
class, Δbusy / (Δt × capacity) for nanosecond engines and Δcycles / (Δtotal-cycles × capacity)
for xe's cycles, summed over the classes it used; the GPU's busy is its busiest class. Those
percentages become ``ProcessInfo.sm_util_pct``, which the mappers and the split read as they read
NVML's, so Slurm, Kubernetes and process mappers, shared-GPU splitting, both views and
conservation work unchanged. What the stats cannot tell is in docs/gpus.md: engine time is
not power (an engine busy on a light kernel counts as much as on a heavy one), ROCm compute
through /dev/kfd does not show at all, and a client that closes between two samples takes its
last interval's time with it.

Each sample's GPUs share one scan of /proc: it is taken when a GPU is asked for the second time
since the last one (the next sample), so the interval is the same for every client of a sample.
A process gone mid-scan, an fd closed, a driver that prints no usage stats, a line that does not
parse: that client (or line) only is left out or degraded, never the others; every scan's health
is a collector of its own (``drm_clients``, ``take_run``). A client on an MI300 compute partition's
render node (a platform device, no ``drm-pdev``) goes to its card through the KFD topology.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..sources.base import ClientUsage, ProcessInfo, ReaderRun
from ..sources.kfd import gpu_nodes

log = logging.getLogger(__name__)

NS_PER_S = 1e9
_UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_LINE = re.compile(r"([^\s:]+):\s*(\d+)(?:\s*(ns|B|KiB|MiB|GiB))?\s*$")
_DRM_NODE = re.compile(r"/dri/(card|renderD)\d+$")
_PCI = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
# Regions of the GPU's own memory (xe vram0, i915 local0, amdgpu vram): the memory the split may fall back to.
_DEVICE_MEMORY = ("vram", "local")
# Drivers that print an engine only once it has been busy (amdgpu): a client without one used nothing.
_ENGINES_WHEN_BUSY = ("amdgpu",)


@dataclass
class ClientStats:
    """One fdinfo of a DRM file: its client and the counters it printed."""

    driver: str
    pdev: str | None = None
    client_id: str | None = None
    engine_ns: dict[str, int] = field(default_factory=dict)  # drm-engine-<class>: busy ns
    cycles: dict[str, int] = field(default_factory=dict)  # drm-cycles-<class> (xe)
    total_cycles: dict[str, int] = field(default_factory=dict)  # drm-total-cycles-<class> (xe)
    capacity: dict[str, int] = field(default_factory=dict)  # drm-engine-capacity-<class>, default 1
    resident_bytes: dict[str, int] = field(default_factory=dict)  # drm-resident-<region> (or drm-memory-)
    bad_lines: int = 0

    @property
    def has_usage(self) -> bool:
        return bool(self.engine_ns or self.cycles)


def parse_fdinfo(text: str) -> ClientStats | None:
    """The DRM client of one fdinfo, or None where it names no DRM driver (not a DRM file, or a
    kernel that prints no usage stats). Lines that do not parse are counted and skipped."""
    driver: str | None = None
    fields: dict[str, int | str] = {}
    bad = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or not key.startswith("drm-"):
            continue  # pos:, flags:, mnt_id:, driver-private keys (amd-, pasid)
        if key == "drm-driver":
            driver = value.strip() or None
            continue
        if key in ("drm-pdev", "drm-client-id", "drm-client-name"):
            fields[key] = value.strip()
            continue
        m = _LINE.fullmatch(line.strip())
        if m is None:
            bad += 1
            continue
        fields[m[1]] = int(m[2]) * (_UNITS[m[3]] if m[3] and m[3] != "ns" else 1)
    if driver is None:
        return None
    stats = ClientStats(driver, (fields.pop("drm-pdev", "") or "").lower() or None,
                        fields.pop("drm-client-id", None) or None, bad_lines=bad)
    for key, value in fields.items():
        if not isinstance(value, int):
            continue
        for prefix, into in (("drm-engine-capacity-", stats.capacity), ("drm-engine-", stats.engine_ns),
                             ("drm-total-cycles-", stats.total_cycles), ("drm-cycles-", stats.cycles),
                             ("drm-resident-", stats.resident_bytes)):
            if key.startswith(prefix):
                into[key[len(prefix):]] = value
                break
        else:
            if key.startswith("drm-memory-"):  # amdgpu's older name of resident
                stats.resident_bytes.setdefault(key[len("drm-memory-"):], value)
    return stats


@dataclass
class _Seen:
    """What a client's counters stood at, at the last scan (the larger value where one went down)."""

    engine_ns: dict[str, int]
    cycles: dict[str, int]
    total_cycles: dict[str, int]
    gaps: frozenset[str] = frozenset()  # ns classes seen before and missing now (a line that did not parse)


def _advance(prev: _Seen | None, stats: ClientStats) -> _Seen:
    """A client's counters after this scan: a nanosecond class it did not print (or whose line did not
    parse) keeps its last value, as a gap; xe's cycles move only with their GPU timestamp, as a pair (a
    class missing for one scan then gives the next one the exact ratio over both intervals)."""
    engine, cycles, totals = ((dict(prev.engine_ns), dict(prev.cycles), dict(prev.total_cycles)) if prev
                              else ({}, {}, {}))
    for cls, ns in stats.engine_ns.items():
        engine[cls] = max(ns, engine.get(cls, 0))
    for cls, n in stats.cycles.items():
        if cls in stats.total_cycles:
            cycles[cls], totals[cls] = max(n, cycles.get(cls, 0)), stats.total_cycles[cls]
    return _Seen(engine, cycles, totals, frozenset(set(engine) - set(stats.engine_ns)))


class DrmClientScanner:
    """Reads every DRM client on the node once per sample; ``usage(pci)`` answers for one GPU.

    ``proc_root`` is the /proc the mappers read (the same pids); ``sys_root`` the root of the
    sysfs that maps a device node to its PCI address, for a file whose fdinfo names none.

    Its health is a collector of its own (``name``): a scan succeeds unless /proc cannot be listed, a
    process's files are denied, a line of a client's stats does not parse or a GPU's file maps to no
    PCI device (``take_run``, which the meter asks for). A process that exits mid-scan is no failure."""

    name = "drm_clients"

    def __init__(self, proc_root: str | Path = "/proc", sys_root: str | Path = "/",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.proc, self.sys, self.clock = Path(proc_root), Path(sys_root), clock
        self._seen: dict[tuple[str, str], _Seen] = {}
        # pdev -> class -> the GPU timestamp (drm-total-cycles) at the last scan: a client opened
        # since then has its cycles counted against the GPU's timestamp of that scan.
        self._gpu_cycles: dict[str, dict[str, int]] = {}
        self._scanned_at: float | None = None
        self._dt: float | None = None  # seconds since the scan before the last one
        self._proc_read = False  # the last scan could list the processes
        # The processes whose files the last scan could not read (None: it could list none): a client of
        # theirs without a previous reading may be an old one, not one opened since, so its first interval is
        # not known (counting its counters from 0 would give it all its past engine time at once).
        self._unseen: set[int] | None = set()
        self._unseen_now: set[int] = set()
        self._served: set[str] = set()
        self._usage: dict[str, ClientUsage] = {}
        self._node_pdev: dict[str, str | None] = {}
        self._complained: set[str] = set()
        self._problems: set[str] = set()  # what the scan under way could not read, by reason
        self._run: ReaderRun | None = None  # the last scan, until the meter takes it
        self._render_pci: dict[int, str] | None = None  # render minor -> PCI address, from the KFD topology

    def take_run(self) -> ReaderRun | None:
        run, self._run = self._run, None
        return run

    def usage(self, pci_bus_id: str) -> ClientUsage:
        pci = pci_bus_id.lower()
        if self._scanned_at is None or pci in self._served:  # a new sample
            self.scan()
        self._served.add(pci)
        return self._usage.get(pci, ClientUsage(None if self._dt is None or not self._proc_read else 0.0))

    # -- one scan ------------------------------------------------------------------------
    def scan(self) -> None:
        started, self._problems = time.perf_counter(), set()
        try:
            self._scan()
        except Exception:
            self._problems.add("error")
            raise
        finally:
            self._run = ReaderRun(not self._problems, time.perf_counter() - started)

    def _scan(self) -> None:
        now = self.clock()
        self._dt = None if self._scanned_at is None else max(now - self._scanned_at, 0.0)
        self._scanned_at, self._served = now, set()
        unseen, self._unseen_now = self._unseen, set()
        clients, bare = self._read_clients()
        per_gpu: dict[str, dict[int, list]] = {}  # pdev -> pid -> [pct | None, memory | None]
        busy: dict[str, dict[str, float]] = {}  # pdev -> class -> summed utilisation
        seen: dict[tuple[str, str], _Seen] = {}
        stamps: dict[str, dict[str, int]] = {}
        for key, (pid, stats) in clients.items():
            pct, util = self._client_usage(key, stats, seen, unseen is None or pid in unseen)
            for cls, total in stats.total_cycles.items():
                stamps.setdefault(key[0], {})[cls] = max(total, stamps.get(key[0], {}).get(cls, 0))
            for cls, u in util.items():
                busy.setdefault(key[0], {}).setdefault(cls, 0.0)
                busy[key[0]][cls] += u
            _merge(per_gpu.setdefault(key[0], {}), pid, pct, _device_memory(stats))
        for pdev, classes in stamps.items():
            self._gpu_cycles.setdefault(pdev, {}).update(classes)
        for pdev, pids in bare.items():  # holders whose driver prints no usage: no share known
            for pid in pids:
                _merge(per_gpu.setdefault(pdev, {}), pid, None, None)
        self._seen = seen
        self._unseen = self._unseen_now if self._proc_read else None
        self._usage = {}
        for pdev, procs in per_gpu.items():
            classes = busy.get(pdev, {})
            known = self._dt is not None and (classes or all(p[0] is not None for p in procs.values()))
            self._usage[pdev] = ClientUsage(
                min(100.0 * max(classes.values(), default=0.0), 100.0) if known else None,
                tuple(ProcessInfo(pid, mem, pct) for pid, (pct, mem) in sorted(procs.items())))

    def _read_clients(self) -> tuple[dict[tuple[str, str], tuple[int, ClientStats]], dict[str, set[int]]]:
        """Every client by (pdev, client id), for its lowest pid; and the pids holding a GPU whose
        files show no client (no usage stats), by pdev."""
        clients: dict[tuple[str, str], tuple[int, ClientStats]] = {}
        bare: dict[str, set[int]] = {}
        denied: list[Path] = []
        try:
            pids = sorted(int(p) for p in os.listdir(self.proc) if p.isdigit())
        except OSError as err:
            self._proc_read = False
            self._problems.add("proc")
            self._complain("proc", f"cannot list {self.proc}: {err}; no per-process GPU usage")
            return clients, bare
        self._proc_read = True
        for pid in pids:
            base = self.proc / str(pid)
            try:
                fds = os.listdir(base / "fd")
            except PermissionError:
                denied.append(base / "fd")
                self._unseen_now.add(pid)
                continue
            except OSError:  # gone since the listing, or a kernel thread
                continue
            for fd in fds:
                try:
                    target = os.readlink(base / "fd" / fd)
                except OSError:
                    continue
                if not _DRM_NODE.search(target):
                    continue
                self._one_file(pid, base / "fdinfo" / fd, target, clients, bare)
        if denied:
            self._problems.add("denied")
            self._complain("denied", f"cannot read {denied[0]} (permission denied), nor the open files of "
                           f"{len(denied) - 1} other process(es): their GPU use is not seen; run as root or with "
                           "CAP_SYS_PTRACE (docs/gpus.md)")
        return clients, bare

    def _one_file(self, pid: int, path: Path, target: str, clients: dict, bare: dict) -> None:
        try:
            text = path.read_text(errors="replace")
        except OSError:  # the process exited or closed the file since its fd was listed
            self._unseen_now.add(pid)
            return
        stats = parse_fdinfo(text)
        pdev = (stats.pdev if stats is not None else None) or self._pdev_of_node(target)
        if stats is not None and stats.bad_lines:
            self._problems.add("unparsable")
            self._complain(f"bad:{stats.driver}", f"{path}: {stats.bad_lines} line(s) of the {stats.driver} usage "
                           f"stats do not parse (device {target}, {pdev or 'no PCI address'}); left out")
        if pdev is None:
            self._problems.add("unmapped")
            self._complain(f"pdev:{target}", f"{path}: no drm-pdev, and neither sysfs nor the KFD topology "
                           f"maps {target} to a PCI device; left out")
            return
        if stats is None or stats.client_id is None or (not stats.has_usage
                                                        and stats.driver not in _ENGINES_WHEN_BUSY):
            self._complain(f"nostats:{pdev}", f"{path} ({target}, {pdev}): no DRM client usage stats; its "
                           "process holds the GPU with no share known (the GPU is then split by memory or equally)")
            if stats is None or stats.client_id is None:
                bare.setdefault(pdev, set()).add(pid)
                return
        key = (pdev, stats.client_id)
        if key not in clients or pid < clients[key][0]:
            clients[key] = (pid, stats)

    def _client_usage(self, key: tuple[str, str], stats: ClientStats, seen: dict[tuple[str, str], _Seen],
                      was_unseen: bool = False) -> tuple[float | None, dict[str, float]]:
        """The client's percent of the interval (its classes' utilisations summed) and each class's
        utilisation; counters that went down keep their larger previous value (the spec's rule). A
        client the last scan could not see (``was_unseen``) has no interval yet, as at the first scan;
        nor has a nanosecond class whose line did not parse at the last scan (its time since is two
        intervals')."""
        prev = self._seen.get(key)  # None: a client opened since the last scan, its counters from 0
        now = _advance(prev, stats)
        seen[key] = now
        util: dict[str, float] = {}
        if self._dt is None or prev is None and was_unseen:  # no interval yet
            return None, util
        gaps = prev.gaps if prev else frozenset()
        unknown = any(cls in gaps for cls in stats.engine_ns)
        for cls in stats.engine_ns:
            if self._dt > 0 and cls not in gaps:
                done = now.engine_ns[cls] - (prev.engine_ns.get(cls, 0) if prev else 0)
                util[cls] = _clamp(done / (self._dt * NS_PER_S * max(stats.capacity.get(cls, 1), 1)))
        gpu_ts = self._gpu_cycles.get(key[0], {})  # the last scan's: updated after this one's clients
        for cls in stats.cycles:
            total = stats.total_cycles.get(cls)
            since = (prev.total_cycles.get(cls) if prev else None) or gpu_ts.get(cls)
            if total is None or since is None or total <= since:
                unknown = unknown or total is None or since is None
                continue
            done = now.cycles[cls] - (prev.cycles.get(cls, 0) if prev else 0)
            util[cls] = _clamp(done / ((total - since) * max(stats.capacity.get(cls, 1), 1)))
        if unknown or not stats.has_usage and stats.driver not in _ENGINES_WHEN_BUSY:
            return None, util
        return 100.0 * sum(util.values()), util

    def _pdev_of_node(self, target: str) -> str | None:
        """The PCI address behind a device node (/dev/dri/renderD128), from sysfs; cached. A compute
        partition's render node (MI300's ``amdgpu_xcp.N``, a platform device) is mapped to its card by
        the KFD topology node whose ``drm_render_minor`` it is."""
        name = target.rsplit("/", 1)[-1]
        if name not in self._node_pdev:
            link = self.sys / "sys/class/drm" / name / "device"
            try:
                device = link.resolve(strict=True).name.lower() if link.exists() else None
            except OSError:
                device = None
            if device is not None and not _PCI.fullmatch(device):
                if self._render_pci is None:
                    self._render_pci = {minor: pci for _, pci, minor in gpu_nodes(self.sys) if minor is not None}
                minor = name.removeprefix("renderD")
                device = self._render_pci.get(int(minor)) if minor.isdigit() else None
            self._node_pdev[name] = device
        return self._node_pdev[name]

    def _complain(self, what: str, message: str) -> None:
        if what not in self._complained:
            self._complained.add(what)
            log.warning("DRM client stats: %s", message)


def _clamp(ratio: float) -> float:
    return min(max(ratio, 0.0), 1.0)


def _device_memory(stats: ClientStats) -> int | None:
    """Resident bytes in the GPU's own memory, or None where the driver names no such region."""
    mine = [v for r, v in stats.resident_bytes.items() if r.startswith(_DEVICE_MEMORY)]
    return sum(mine) if mine else None


def _merge(procs: dict[int, list], pid: int, pct: float | None, memory: int | None) -> None:
    """Add one client to its process: percentages and memory add up; unknown stays unknown."""
    if pid not in procs:
        procs[pid] = [pct, memory]
        return
    p = procs[pid]
    p[0] = None if p[0] is None or pct is None else p[0] + pct
    p[1] = memory if p[1] is None else p[1] + (memory or 0)

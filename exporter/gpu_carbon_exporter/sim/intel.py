"""Simulated Intel discrete GPUs: the xe and i915 sysfs and hwmon trees, and the DRM client usage
stats (``/proc/PID/fdinfo``) of the jobs running on them, with exact truth.

Driver-shaped, so the production source (``sources/intel_gpu.py``) and the fdinfo reader
(``attribution/fdinfo.py``) run unchanged over them:

- ``sys/class/drm/cardN`` links to the PCI device (vendor 0x8086, ``driver`` linked to xe or i915),
  beside an ASPEED BMC's VGA card0 (vendor 0x1a03, driver ast) that is no Intel GPU;
- the hwmon is the driver's: xe has ``energy1`` "card" and ``energy2`` "pkg" on Arc B and only
  ``energy2`` "pkg" on the Max; i915 has an unlabelled ``energy1`` and, on the two-tile Max,
  per-tile ``i915_gt0``/``i915_gt1`` hwmons beside it (half the energy each, never the device's);
- the energy file is what the drivers compute: a 32-bit register counting 2^-14 J, accumulated
  on every read into 64 bits and printed in µJ, so reading it less often than the register wraps
  loses energy as it would on the card (``update`` is the read);
- each job process holding a card has its DRM file open twice (fd 7, and fd 8 dup'ed from it),
  and the first job of each card has forked a child that shares the same client: three files, one
  client (one ``drm-client-id``). Clients keep the compute engines busy at ``share`` / (the sum
  of the shares of the card's jobs, at least 1) and the copy engine at a tenth of that, while the
  job runs; a job's every run (cycle) is a new process and a new client, counting from 0.

Truth: a card's energy is its power pattern's integral (the "card" channel; the Max's "pkg", its
only one); ``client_busy_s`` is a client's engine-seconds in closed form.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .scenario import Scenario, SimDevice, SimJob
from .trace import job_pid
from .ticker import Ticker

ENERGY_SHIFT = 14  # the energy register counts 2^-14 J (the drivers' scl_shift_energy)
REGISTER = 2**32
GPU_TIMESTAMP_HZ = 19_200_000  # the engines' timestamp (drm-total-cycles): the 19.2 MHz reference clock
PKG_SHARE = 0.85  # of the card's power, where a card has both channels (the rest: memory, VRs, fans)
COPY_SHARE = 0.1  # of a client's compute busy, on the copy engine
CHILD_PID_OFFSET = 50  # the forked child of a job process: job_pid + this
FD_DRM, FD_DUP = 7, 8


@dataclass(frozen=True)
class IntelCard:
    """What a simulated card model is on the bus and in its driver's hwmon."""

    pci_id: int
    xe_channels: tuple[str, ...]  # energy labels xe gives it, channel 1 = card, 2 = pkg
    tiles: int = 1
    engines_xe: tuple[tuple[str, int], ...] = (("rcs", 1), ("bcs", 1), ("vcs", 2), ("vecs", 1), ("ccs", 4))


# The Max has no render engine; the capacities are illustrative (xe prints those above 1).
_MAX_ENGINES = (("bcs", 1), ("vcs", 2), ("ccs", 4))
CARDS = {
    "Intel Data Center GPU Max 1550": IntelCard(0x0BD5, ("pkg",), tiles=2, engines_xe=_MAX_ENGINES),
    "Intel Data Center GPU Max 1100": IntelCard(0x0BDA, ("pkg",), engines_xe=_MAX_ENGINES),
    "Intel Arc B580": IntelCard(0xE20B, ("card", "pkg")),
}
# i915's engine classes (ns) and capacities; "compute" is what a job keeps busy.
ENGINES_I915 = (("render", 1), ("copy", 1), ("video", 2), ("video-enhance", 1), ("compute", 4))
COMPUTE = {"xe": "ccs", "i915": "compute"}
COPY = {"xe": "bcs", "i915": "copy"}


def pci_address(device: SimDevice) -> str:
    """The simulated card's PCI address (NVML's simulated bus ids follow the same rule)."""
    return f"0000:{0x18 + device.index * 0x10:02x}:00.0"


def _write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)  # a reader never sees a half-written file


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_symlink():
        os.symlink(os.path.relpath(target, path.parent), path)


class _Register:
    """The driver's energy accounting of one channel: a 32-bit register accumulated on each read."""

    def __init__(self, device: SimDevice, share: float, offset_units: int) -> None:
        self.device, self.share, self.offset = device, share, offset_units
        self.prev: int | None = None
        self.accum = 0

    def read_uj(self, t: float) -> int:
        """The file's value at a read at ``t``: µJ, printed as hwmon prints a long (signed 64-bit)."""
        units = math.floor(self.device.pattern.energy(t) * self.share * 2**ENERGY_SHIFT) + self.offset
        if self.prev is None:  # as if read all along since the driver loaded at t = 0
            self.accum = units
        else:
            self.accum += (units % REGISTER - self.prev) % REGISTER
        self.prev = units % REGISTER
        uj = (self.accum * 10**6 >> ENERGY_SHIFT) % 2**64
        return uj - 2**64 if uj >= 2**63 else uj

    def reload(self, t: float) -> None:
        """The driver reloaded at ``t``: its accumulator starts again from 0 at the register's value."""
        self.accum = 0
        self.prev = (math.floor(self.device.pattern.energy(t) * self.share * 2**ENERGY_SHIFT) + self.offset) % REGISTER


class IntelGpuSimulator(Ticker):
    """Lays out the Intel cards of ``scenario`` under ``sys_root`` and their jobs' DRM files under
    ``proc_root`` (the /proc of ``sim/procfs.py``), and writes both on ``update(t)``: call it once
    before the source opens (the first read of the registers counts from the driver's load at t = 0)."""
    thread_name = "intel-sim"

    def __init__(self, scenario: Scenario, sys_root: str | Path, proc_root: str | Path) -> None:
        self.sc, self.sys, self.proc = scenario, Path(sys_root), Path(proc_root)
        self.cards = [d for d in scenario.devices if d.model.vendor == "intel"]
        self._registers: dict[Path, _Register] = {}
        self._stop = threading.Event()
        self._layout_bmc()
        for n, d in enumerate(self.cards, start=1):
            self._layout_card(n, d)  # the values come with the first update(t), the driver's first read

    # -- sysfs -------------------------------------------------------------------------
    def _device_dir(self, pci: str) -> Path:
        return self.sys / "sys/devices/pci0000:00" / pci

    def _layout_bmc(self) -> None:
        """card0: the BMC's VGA, no Intel GPU (the source must pass it by)."""
        dev = self._device_dir("0000:02:00.0")
        _write(dev / "vendor", "0x1a03")
        _write(dev / "device", "0x2000")
        (self.sys / "sys/bus/pci/drivers/ast").mkdir(parents=True, exist_ok=True)
        _link(dev / "driver", self.sys / "sys/bus/pci/drivers/ast")
        self._drm_node(dev, "card0")
        self._drm_node(dev, "card0-VGA-1")

    def _drm_node(self, dev: Path, name: str) -> None:
        (dev / "drm" / name).mkdir(parents=True, exist_ok=True)
        _link(dev / "drm" / name / "device", dev)
        _link(self.sys / "sys/class/drm" / name, dev / "drm" / name)

    def _layout_card(self, n: int, d: SimDevice) -> None:
        card = CARDS[d.model.name]
        dev = self._device_dir(pci_address(d))
        _write(dev / "vendor", "0x8086")
        _write(dev / "device", f"{card.pci_id:#06x}")
        (self.sys / "sys/bus/pci/drivers" / d.driver).mkdir(parents=True, exist_ok=True)
        _link(dev / "driver", self.sys / "sys/bus/pci/drivers" / d.driver)
        self._drm_node(dev, f"card{n}")
        self._drm_node(dev, f"renderD{127 + n}")
        offset = d.energy_offset_mj * 2**ENERGY_SHIFT // 1000
        rated_uw = round(d.model.max_w * 1e6)
        hw = dev / "hwmon" / f"hwmon{2 + 3 * n}"
        _write(hw / "name", d.driver)
        self._class_hwmon(hw)
        if d.driver == "xe":
            for label in card.xe_channels:
                ch = 1 if label == "card" else 2
                share = PKG_SHARE if label == "pkg" and "card" in card.xe_channels else 1.0
                self._registers[hw / f"energy{ch}_input"] = _Register(d, share, offset)
                for what, value in ((f"energy{ch}_label", label), (f"power{ch}_label", label),
                                    (f"power{ch}_max", rated_uw), (f"power{ch}_rated_max", rated_uw)):
                    _write(hw / what, value)
            if "card" in card.xe_channels:  # Arc B: package temperature and a fan
                _write(hw / "temp2_label", "pkg")
                _write(hw / "fan1_input", 1200)
        else:
            self._registers[hw / "energy1_input"] = _Register(d, 1.0, offset)
            for what, value in (("power1_max", rated_uw), ("power1_rated_max", rated_uw),
                                ("power1_max_interval", 28000), ("in0_input", 830)):
                _write(hw / what, value)
            for tile in range(card.tiles if card.tiles > 1 else 0):  # per-tile hwmons of a multi-tile part
                gt = dev / "hwmon" / f"hwmon{3 + 3 * n + tile}"
                _write(gt / "name", f"i915_gt{tile}")
                self._class_hwmon(gt)
                self._registers[gt / "energy1_input"] = _Register(d, 1.0 / card.tiles, 0)

    def reload_driver(self, d: SimDevice, t: float) -> None:
        """Reload the driver of card ``d`` at ``t``: its energy files count again from 0."""
        for register in self._registers.values():
            if register.device is d:
                register.reload(t)

    def renumber_hwmon(self, d: SimDevice) -> None:
        """The driver registered card ``d``'s hwmon again, under a new number (as after a reload)."""
        old = self.energy_file(d).parent
        new = old.with_name(f"hwmon{int(old.name[5:]) + 100}")
        old.rename(new)
        (self.sys / "sys/class/hwmon" / old.name).unlink()
        self._class_hwmon(new)
        self._registers = {new / p.name if p.parent == old else p: r for p, r in self._registers.items()}

    def _class_hwmon(self, hw: Path) -> None:
        """/sys/class/hwmon/hwmonN, where the generic hwmon source looks (it leaves xe and i915 alone)."""
        _link(self.sys / "sys/class/hwmon" / hw.name, hw)
        _link(hw / "device", hw.parent.parent)

    def energy_file(self, d: SimDevice) -> Path:
        """The file the source should read for card ``d`` (its truth's channel)."""
        card = CARDS[d.model.name]
        hw = next(h for h in (self._device_dir(pci_address(d)) / "hwmon").iterdir()
                  if (h / "name").read_text().strip() == d.driver)
        ch = 1 if d.driver == "i915" or "card" in card.xe_channels else 2
        return hw / f"energy{ch}_input"

    # -- the jobs' DRM clients -----------------------------------------------------------------
    @staticmethod
    def _run(job: SimJob, t: float) -> tuple[int, float]:
        """(number, start) of the job's run (its cycle) at ``t``."""
        k = math.floor(t / job.repeat_s) if job.repeat_s else 0
        return k, (k * job.repeat_s if job.repeat_s else 0.0) + job.start_s

    def _runs(self, t: float) -> list[tuple[int, SimJob, int, SimDevice, int]]:
        """(job index, job, position, card, run number) of every job process on a card now."""
        return [(j, job, pos, self.sc.devices[index], self._run(job, t)[0])
                for j, job in enumerate(self.sc.jobs) if job.active(t)
                for pos, index in enumerate(job.devices) if self.sc.devices[index].model.vendor == "intel"]

    def rate(self, job: SimJob, d: SimDevice) -> float:
        """The fraction of the card's compute engines the job keeps busy while it runs."""
        shares = sum(x.share for x in self.sc.jobs if d.index in x.devices)
        return job.share / max(shares, 1.0)

    def client_busy_s(self, job: SimJob, d: SimDevice, t: float) -> float:
        """Compute engine-seconds (summed over the class's engines) of the job's client on ``d`` at
        ``t``, since its current run began; 0 when the job does not run."""
        if not job.active(t):
            return 0.0
        start = self._run(job, t)[1]
        capacity = dict(self._engines(d))[COMPUTE[d.driver]]
        return self.rate(job, d) * capacity * (t - start)

    def client_id(self, j: int, pos: int, k: int) -> int:
        """Unique per client, never reused (a new run is a new process and a new client)."""
        return (k * len(self.sc.jobs) + j) * 64 + pos + 1

    def _engines(self, d: SimDevice) -> tuple[tuple[str, int], ...]:
        return CARDS[d.model.name].engines_xe if d.driver == "xe" else ENGINES_I915

    def _fdinfo(self, j: int, job: SimJob, pos: int, d: SimDevice, k: int, t: float) -> str:
        busy = self.client_busy_s(job, d, t)
        memory_kib = int(d.model.memory_bytes * 0.6 * self.rate(job, d)) // 1024
        lines = ["pos:\t0", "flags:\t02100002", "mnt_id:\t26", f"ino:\t{1000 + j}", f"drm-driver:\t{d.driver}",
                 f"drm-client-id:\t{self.client_id(j, pos, k)}", f"drm-pdev:\t{pci_address(d)}"]
        engines = self._engines(d)
        compute, copy = COMPUTE[d.driver], COPY[d.driver]

        def seconds(cls: str, capacity: int) -> float:  # engine-seconds of a class: compute, a tenth on copy
            if cls == compute:
                return busy
            return busy / dict(engines)[compute] * COPY_SHARE * capacity if cls == copy else 0.0

        if d.driver == "xe":
            for region, kib in (("system", 2048), ("gtt", 0), ("vram0", memory_kib)):
                lines += [f"drm-total-{region}:\t{kib} KiB", f"drm-resident-{region}:\t{kib} KiB",
                          f"drm-shared-{region}:\t0", f"drm-active-{region}:\t0", f"drm-purgeable-{region}:\t0"]
            total = math.floor(t * GPU_TIMESTAMP_HZ)
            for cls, cap in engines:
                lines += [f"drm-cycles-{cls}:\t{math.floor(seconds(cls, cap) * GPU_TIMESTAMP_HZ)}",
                          f"drm-total-cycles-{cls}:\t{total}"]
                if cap > 1:
                    lines.append(f"drm-engine-capacity-{cls}:\t{cap}")
        else:
            for cls, cap in engines:
                lines.append(f"drm-engine-{cls}:\t{math.floor(seconds(cls, cap) * 1e9)} ns")
                if cap > 1:
                    lines.append(f"drm-engine-capacity-{cls}:\t{cap}")
            lines += [f"drm-total-local0:\t{memory_kib} KiB", f"drm-resident-local0:\t{memory_kib} KiB",
                      "drm-total-system0:\t2048 KiB", "drm-resident-system0:\t2048 KiB"]
        return "\n".join(lines) + "\n"

    def _processes(self, t: float) -> dict[int, list[tuple[int, str, str]]]:
        """pid -> [(fd, device node, fdinfo text)] of every process holding a card now."""
        out: dict[int, list[tuple[int, str, str]]] = {}
        first_on: set[int] = set()
        for j, job, pos, d, k in self._runs(t):
            node = f"/dev/dri/renderD{127 + self.cards.index(d) + 1}"
            text = self._fdinfo(j, job, pos, d, k, t)
            pid = job_pid(j, pos)
            out.setdefault(pid, []).extend([(FD_DRM, node, text), (FD_DUP, node, text)])
            if d.index not in first_on:  # the card's first job forked a child sharing its client
                first_on.add(d.index)
                out.setdefault(pid + CHILD_PID_OFFSET, []).append((FD_DRM, node, text))
        return out

    def _write_processes(self, t: float) -> None:
        now = self._processes(t)
        for pid_dir in self.proc.iterdir():
            if not pid_dir.name.isdigit():
                continue
            pid = int(pid_dir.name)
            if pid not in now:
                for fd in (FD_DRM, FD_DUP):  # not on a card now: its DRM files are closed
                    (pid_dir / "fd" / str(fd)).unlink(missing_ok=True)
                    (pid_dir / "fdinfo" / str(fd)).unlink(missing_ok=True)
        for pid, files in now.items():
            base = self.proc / str(pid)
            if not (base / "fd").exists():
                self._layout_process(pid)
            for fd, node, text in files:
                _write(base / "fdinfo" / str(fd), text.rstrip("\n"))
                link = base / "fd" / str(fd)
                if not link.is_symlink():
                    os.symlink(node, link)

    def _layout_process(self, pid: int) -> None:
        """A process's other files: stdin on /dev/null and a socket (no DRM files); a forked child gets
        its parent's cgroup, environment and status (the same job)."""
        base = self.proc / str(pid)
        parent = self.proc / str(pid - CHILD_PID_OFFSET)
        if not (base / "cgroup").exists() and (parent / "cgroup").exists():
            base.mkdir(parents=True, exist_ok=True)
            for name in ("cgroup", "environ", "status"):
                (base / name).write_bytes((parent / name).read_bytes())
        (base / "fd").mkdir(parents=True, exist_ok=True)
        (base / "fdinfo").mkdir(parents=True, exist_ok=True)
        for fd, target in ((0, "/dev/null"), (3, f"socket:[{40000 + pid % 1000}]")):
            if not (base / "fd" / str(fd)).is_symlink():
                os.symlink(target, base / "fd" / str(fd))
                _write(base / "fdinfo" / str(fd), f"pos:\t0\nflags:\t02\nmnt_id:\t{24 + fd}\nino:\t{pid}")

    # -- values ------------------------------------------------------------------------------
    def update(self, t: float) -> None:
        """Rewrite every value for scenario time ``t``: a read of every energy register, then the
        DRM files of the processes on the cards."""
        for path, register in self._registers.items():
            _write(path, register.read_uj(t))
            if path.name == "energy1_input" and (path.parent / "temp2_label").exists():
                _write(path.parent / "temp2_input", round(1000 * (35 + 50 * register.device.utilization(t))))
        if self.proc.exists():
            self._write_processes(t)

    def run(self, clock: Callable[[], float], hz: float = 20.0) -> None:
        super().run(clock, hz)

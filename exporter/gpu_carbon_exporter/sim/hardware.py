"""A scenario's simulated hardware, laid out where the real sources look for it.

The simulator imitates hardware, never sources: NVIDIA GPUs are a pynvml-shaped library
(``nvml.py``), AMD GPUs a live fake amdgpu sysfs tree (``amdgpu.py``), Intel GPUs a fake xe/i915
sysfs tree and their jobs' DRM files in a fake /proc (``intel.py``), edge boards and RAPL zones a
live fake sysfs tree (``sysfs.py``). ``simulated_hardware`` lays them out and says, as a node's
configuration would, which registered source reads each part and with which settings; start-up
then builds those sources through the registry, as on a real node, and names no source class.

The temporary trees (this sysfs tree, the procfs tree of simulated jobs) are marked with the
exporter's pid and removed when it exits, or by a later start if it was killed
(``remove_stale_sim_trees``).
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .scenario import Scenario

# The exporter's logger, as start-up's: these lines moved here from there and read the same.
log = logging.getLogger("gpu_carbon_exporter")

SIM_TREE_PREFIXES = ("gpu-carbon-proc-", "gpu-carbon-sysfs-")
OWNER_FILE = ".owner-pid"


@dataclass
class SimulatedHardware:
    """What a simulated node's sources read, by source name (``plugins.family("source")``)."""

    # Each source's config section, in the order its sources are built: the keys the scenario sets
    # (the schema's defaults fill the rest).
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The libraries a source reads instead of the host's (``SourceContext.libraries``).
    libraries: dict[str, Any] = field(default_factory=dict)
    # Where simulated GPUs without a process list (AMD's, Intel's) show their jobs' DRM client stats: the fake
    # /proc (the mappers read the same one) and the sysfs tree beside it; None where none needs them.
    proc_root: str | None = None
    sysfs_root: str | None = None


def simulated_hardware(scenario: Scenario, clock: Callable[[], float]) -> SimulatedHardware:
    """Lay out the scenario's hardware, read at scenario time ``clock()``: GPUs first (NVIDIA's, then
    AMD's, then Intel's), then the edge board, then the RAPL zones (the order their sources are built
    and sampled in)."""
    from .sysfs import READ_BY

    hw = SimulatedHardware()
    if any(d.model.vendor == "nvidia" for d in scenario.devices):
        from .nvml import SimulatedNvml

        hw.sections["nvml"] = {"enabled": True}
        hw.libraries["nvml"] = SimulatedNvml(scenario, clock)
    if any(d.model.vendor in ("amd", "intel") for d in scenario.devices):  # their jobs' DRM files
        from .procfs import write_procfs

        hw.proc_root = temporary(write_procfs(scenario))
    amd = _amdgpu_tree(scenario, clock, hw.proc_root)
    if amd is not None:
        hw.sections["amdgpu"] = {"enabled": True, "sysfs_root": amd}
        hw.sysfs_root = amd  # where a DRM file without drm-pdev finds its card (Intel's tree, if any, below)
    root = _sysfs_tree(scenario, clock)
    if root is not None and any(d.model.vendor == "intel" for d in scenario.devices):
        hw.sections["intel_gpu"] = {"enabled": True, "sysfs_root": root}
        _intel_gpus(scenario, root, hw.proc_root or "", clock)
        hw.sysfs_root = root
    if root is not None and scenario.edge.board:
        name, settings = READ_BY[scenario.edge.board]
        hw.sections[name] = {**settings, "sysfs_root": root}
    if root is not None and scenario.edge.rapl_pattern:
        hw.sections["rapl"] = {"enabled": True, "sysfs_root": root}
    return hw


def _amdgpu_tree(scenario: Scenario, clock: Callable[[], float], proc: str | None) -> str | None:
    """The AMD cards' live fake amdgpu sysfs tree (and their jobs' DRM files under ``proc``), or None
    where the scenario has none."""
    from .amdgpu import AmdgpuSimulator

    cards = [d for d in scenario.devices if d.model.vendor == "amd"]
    if not cards:
        return None
    root = temporary(tempfile.mkdtemp(prefix="gpu-carbon-sysfs-"))
    sim = AmdgpuSimulator(root, cards)
    if proc is not None:
        sim.attach_clients(scenario, proc)
    sim.update(clock())
    sim.run(clock)
    atexit.register(sim.stop)  # runs before the tree is removed (atexit is last in, first out)
    log.info("simulated amdgpu sysfs tree (%d cards) under %s", len(cards), root)
    return root


def _sysfs_tree(scenario: Scenario, clock: Callable[[], float]) -> str | None:
    """The live fake sysfs tree of the edge board, the RAPL zones and the Intel GPUs, or None where
    the scenario has none of them."""
    from .sysfs import EdgeBoard, SysfsSimulator

    e = scenario.edge
    if e.board is None and e.rapl_pattern is None and all(d.model.vendor != "intel" for d in scenario.devices):
        return None
    root = temporary(tempfile.mkdtemp(prefix="gpu-carbon-sysfs-"))
    if e.board is None and e.rapl_pattern is None:
        return root
    sim = SysfsSimulator(root, EdgeBoard(e.board, e.board_pattern) if e.board else None, e.rapl_pattern,
                         rapl_packages=e.rapl_packages, psys=e.psys)
    sim.update(clock())
    sim.run(clock)
    atexit.register(sim.stop)  # runs before the tree is removed (atexit is last in, first out)
    log.info("simulated sysfs tree (%s%s) under %s", e.board or "", " + RAPL" if e.rapl_pattern else "", root)
    return root


def _intel_gpus(scenario: Scenario, root: str, proc: str, clock: Callable[[], float]) -> None:
    """Lay out the Intel GPUs (xe/i915 sysfs and hwmon) under ``root`` and their jobs' DRM files
    under ``proc``, kept current in a thread."""
    from .intel import IntelGpuSimulator

    sim = IntelGpuSimulator(scenario, root, proc)
    sim.update(clock())
    sim.run(clock)
    atexit.register(sim.stop)
    log.info("simulated Intel GPUs (%d, hwmon and DRM client stats) under %s and %s", len(sim.cards), root, proc)


def temporary(path: str) -> str:
    """Remove a simulator's temporary tree when the exporter exits; mark it with our pid, so that a
    later start removes it if we were killed before we could (SIGKILL runs no exit handler)."""
    Path(path, OWNER_FILE).write_text(str(os.getpid()))
    atexit.register(shutil.rmtree, path, True)
    return path


def remove_stale_sim_trees(tmp: str | None = None) -> int:
    """Delete simulator trees whose owning process is gone; returns how many."""
    removed = 0
    for d in Path(tmp or tempfile.gettempdir()).glob("gpu-carbon-*-*"):
        if not d.name.startswith(SIM_TREE_PREFIXES) or not d.is_dir():
            continue
        try:
            pid = int((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not (yet) marked: may be another exporter's tree being laid out
        if pid == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed += 1
    if removed:
        log.info("removed %d simulator tree(s) left under /tmp by killed runs", removed)
    return removed

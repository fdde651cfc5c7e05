"""Public entry points: the exporter's parts built from a validated configuration.

The CLI, the benches and the tests all start the exporter through these functions:
``build_meter`` (sources, intensity, attribution and the meter, real or simulated),
``build_sources``, ``build_attribution``, ``make_collector`` and ``make_registry``.
"""
from __future__ import annotations

import atexit
import logging
import time
from pathlib import Path
from typing import Any

from prometheus_client.registry import CollectorRegistry

from .carbon.base import IntensityProvider
from .carbon.select import build_provider
from .carbon.static import TimelineIntensity
from .collector import SnapshotCollector
from .config import Section
from .meter import Embodied, Meter
from .sources.base import DeviceSource
from .state import StateStore

log = logging.getLogger("gpu_carbon_exporter")


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas() -> None:
    """One malloc arena for the whole process, set before any thread starts.

    glibc gives each thread that allocates an arena of its own (up to eight per core): the
    sampler, the deadline watchdog and every connection's thread each keep partly used pages,
    about 1 MB of resident memory for an exporter whose threads mostly sleep. Elsewhere (musl,
    macOS) there is no such call and nothing changes."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


def build_meter(cfg: Section, simulate: str | None) -> tuple[Meter, list[DeviceSource]]:
    """Sources, intensity and the meter, from the typed config (and a scenario when simulating).
    Settings reach the constructors under their documented names."""
    carbon = cfg.carbon
    emb = carbon.embodied
    embodied = Embodied(emb.kg_co2e_per_device, emb.lifetime_years) if emb.kg_co2e_per_device else None
    emb_rate = embodied.grams_per_second if embodied else 0.0
    pue = carbon.pue
    if simulate is not None:
        sources, intensity, scenario_pue, attribution = _simulated(cfg, simulate, emb_rate)
        pue = pue if pue is not None else scenario_pue
    else:
        intensity = build_provider(carbon)
        attribution = build_attribution(cfg.attribution, embodied_g_per_s=emb_rate)
        sources = build_sources(cfg.sources, read_processes=attribution is not None)
    sampling, state = cfg.sampling, cfg.state
    meter = Meter(
        sources, intensity, pue=pue if pue is not None else 1.0, embodied=embodied,
        wue_liters_per_kwh=carbon.wue_liters_per_kwh, state=StateStore(state.path) if state.path else None,
        persist_interval_seconds=state.persist_interval_seconds, attribution=attribution, **sampling)
    return meter, sources


def _simulated(cfg: dict[str, Any], simulate: str, emb_rate: float) -> tuple:
    """Sources, intensity, PUE and attribution of a simulated node (``--simulate``)."""
    from .sim.nvml import SimulatedNvml
    from .sim.scenario import load_scenario
    from .sources.nvml import NvmlSource

    remove_stale_sim_trees()
    scenario = load_scenario(simulate)
    fixed = scenario.epoch()
    epoch = fixed if fixed is not None else time.time()
    if fixed is None:
        log.info("scenario %s has no start_time or cycle_s: its counters start at 0 with each run", scenario.name)
    attribution = None
    if scenario.jobs and cfg["attribution"]["enabled"]:
        from .sim.procfs import write_procfs

        acfg = {**cfg.attribution, "slurm_environ": True, "mappers": "slurm"}
        acfg["idle_watts"] = {d.model.name: d.model.idle_w for d in scenario.devices} | acfg["idle_watts"]
        acfg["teams"] = {**cfg.attribution.teams, "accounts": {j.team: j.team for j in scenario.jobs if j.team}}
        attribution = build_attribution(acfg, proc_root=_temporary(write_procfs(scenario)),
                                        embodied_g_per_s=emb_rate)
    sources: list[DeviceSource] = []
    if scenario.devices:
        sources.append(NvmlSource(SimulatedNvml(scenario, lambda: time.time() - epoch),
                                  read_processes=attribution is not None))
    sources += _simulated_sysfs_sources(scenario, lambda: time.time() - epoch)
    sources += _estimates(cfg)
    timeline = scenario.intensity.get(scenario.zone)
    intensity: IntensityProvider
    if cfg["carbon"]["zone"] is None and timeline is not None:
        intensity = TimelineIntensity(scenario.zone, timeline, lambda: epoch)
    else:
        intensity = build_provider(cfg["carbon"])
    log.info("simulating %d GPUs from %s", len(scenario.devices), scenario.name)
    return sources, intensity, scenario.pue, attribution


def _estimates(cfg: dict[str, Any]) -> list[DeviceSource]:
    """The network and storage estimates where configured: they read this host's counters, so a
    simulated node carries them too."""
    from .plugins import SourceContext, family

    return [s for name in ("network", "storage") for s in family("source")[name].factory(cfg["sources"][name],
                                                                                           SourceContext())]


SIM_TREE_PREFIXES = ("gpu-carbon-proc-", "gpu-carbon-sysfs-")
OWNER_FILE = ".owner-pid"


def _temporary(path: str) -> str:
    """Remove a simulator's temporary tree when the exporter exits; mark it with our pid, so that a
    later start removes it if we were killed before we could (SIGKILL runs no exit handler)."""
    import os
    import shutil

    Path(path, OWNER_FILE).write_text(str(os.getpid()))
    atexit.register(shutil.rmtree, path, True)
    return path


def remove_stale_sim_trees(tmp: str | None = None) -> int:
    """Delete simulator trees whose owning process is gone; returns how many."""
    import os
    import shutil
    import tempfile

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


def _simulated_sysfs_sources(scenario: Any, clock: Any) -> list[DeviceSource]:
    """Edge boards and RAPL zones of a scenario: a live fake sysfs tree read by the real sources."""
    import tempfile

    from .sim.sysfs import EdgeBoard, SysfsSimulator
    from .sources.jetson import JetsonSource
    from .sources.rapl import RaplSource

    e = scenario.edge
    if e.board is None and e.rapl_pattern is None:
        return []
    root = _temporary(tempfile.mkdtemp(prefix="gpu-carbon-sysfs-"))
    sim = SysfsSimulator(root, EdgeBoard(e.board, e.board_pattern) if e.board else None, e.rapl_pattern,
                         rapl_packages=e.rapl_packages, psys=e.psys)
    sim.update(clock())
    sim.run(clock)
    atexit.register(sim.stop)  # runs before the tree is removed (atexit is last in, first out)
    log.info("simulated sysfs tree (%s%s) under %s", e.board or "", " + RAPL" if e.rapl_pattern else "", root)
    board: list[DeviceSource] = []
    if e.board == "rpi":
        from .sources.hwmon import HwmonSource

        board = [HwmonSource(root, whole_device=("ina219",))]  # on the Pi's 5-V input: the whole board
    elif e.board == "laptop":
        from .sources.battery import BatterySource

        board = [BatterySource(root)]
    elif e.board:
        board = [JetsonSource(root)]
    return board + ([RaplSource(root)] if e.rapl_pattern else [])


def build_attribution(acfg: dict[str, Any], proc_root: str | None = None, embodied_g_per_s: float = 0.0):
    """The attribution engine and its mappers, in the configured order ("auto": what the node has)."""
    from .attribution.engine import Attribution
    from .attribution.mappers import Teams
    from .plugins import MapperContext, family

    if not acfg["enabled"]:
        return None
    mappers = family("mapper")
    if acfg["mappers"] == "auto":
        names = [name for name, p in mappers.items() if p.auto is not None and p.auto(acfg)]
    else:
        names = [m.strip() for m in acfg["mappers"].split(",") if m.strip()]
    t = acfg["teams"]
    ctx = MapperContext(proc_root or acfg["proc_root"], Teams(dict(t["namespaces"]), dict(t["accounts"]),
                                                             dict(t["users"])))
    log.info("attribution mappers: %s", ", ".join(names))
    return Attribution([mappers[n].factory(acfg, ctx) for n in names], idle_watts=dict(acfg["idle_watts"]),
                       linger_seconds=acfg["linger_seconds"], embodied_g_per_s=embodied_g_per_s,
                       work_dir=acfg["work_dir"])


def build_sources(scfg: dict[str, Any], read_processes: bool = False) -> list[DeviceSource]:
    """Every enabled power source, in registration order (NVML first)."""
    from .plugins import SourceContext, family

    ctx = SourceContext(read_processes=read_processes)
    return [source for name, plugin in family("source").items() for source in plugin.factory(scfg[name], ctx)]


def make_collector(meter: Meter, cfg: dict[str, Any]) -> SnapshotCollector:
    return SnapshotCollector(
        lambda: meter.snapshot, embodied=bool(cfg["carbon"]["embodied"]["kg_co2e_per_device"]),
        water=cfg["carbon"]["wue_liters_per_kwh"] is not None)


def make_registry(meter: Meter, cfg: dict[str, Any]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(make_collector(meter, cfg))
    return registry

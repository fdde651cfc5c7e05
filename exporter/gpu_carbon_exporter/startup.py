"""Public entry points: the exporter's parts built from a validated configuration.

The CLI, the benches and the tests all start the exporter through these functions:
``build_meter`` (sources, intensity, attribution and the meter, real or simulated),
``build_sources``, ``build_attribution``, ``make_collector`` and ``make_registry``.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client.registry import CollectorRegistry

from .carbon.base import IntensityProvider
from .carbon.select import build_provider
from .carbon.static import TimelineIntensity
from .collector import SnapshotCollector
from .schema import Section
from .meter import Embodied, Meter
from .sources.base import DeviceSource
from .state import StateStore

if TYPE_CHECKING:
    from .sim.hardware import SimulatedHardware

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
        sources = build_sources(cfg.sources, read_processes=attribution is not None,
                                proc_root=cfg.attribution.proc_root)
    sampling, state = cfg.sampling, cfg.state
    meter = Meter(
        sources, intensity, pue=pue if pue is not None else 1.0, embodied=embodied,
        wue_liters_per_kwh=carbon.wue_liters_per_kwh, state=StateStore(state.path) if state.path else None,
        persist_interval_seconds=state.persist_interval_seconds, attribution=attribution, **sampling)
    return meter, sources


def _simulated(cfg: Section, simulate: str, emb_rate: float) -> tuple:
    """Sources, intensity, PUE and attribution of a simulated node (``--simulate``)."""
    from .sim.hardware import remove_stale_sim_trees, simulated_hardware, temporary
    from .sim.scenario import load_scenario

    remove_stale_sim_trees()
    scenario = load_scenario(simulate)
    fixed = scenario.epoch()
    epoch = fixed if fixed is not None else time.time()
    if fixed is None:
        log.info("scenario %s has no start_time or cycle_s: its counters start at 0 with each run", scenario.name)
    hardware = simulated_hardware(scenario, lambda: time.time() - epoch)
    attribution = None
    if scenario.jobs and cfg.attribution.enabled:
        from .sim.procfs import write_procfs

        acfg = {**cfg.attribution, "slurm_environ": True, "mappers": "slurm"}
        acfg["idle_watts"] = {d.model.name: d.model.idle_w for d in scenario.devices} | acfg["idle_watts"]
        acfg["teams"] = {**cfg.attribution.teams, "accounts": {j.team: j.team for j in scenario.jobs if j.team}}
        attribution = build_attribution(acfg, proc_root=hardware.proc_root or temporary(write_procfs(scenario)),
                                        embodied_g_per_s=emb_rate)
    sources = _simulated_sources(cfg, hardware, read_processes=attribution is not None)
    timeline = scenario.intensity.get(scenario.zone)
    intensity: IntensityProvider
    if cfg.carbon.zone is None and timeline is not None:
        intensity = TimelineIntensity(scenario.zone, timeline, lambda: epoch)
    else:
        intensity = build_provider(cfg.carbon)
    log.info("simulating %d GPUs from %s", len(scenario.devices), scenario.name)
    return sources, intensity, scenario.pue, attribution


def _simulated_sources(cfg: Section, hardware: SimulatedHardware, read_processes: bool) -> list[DeviceSource]:
    """A simulated node's sources, built through the registry as a real node's are: those that read
    the simulated hardware, with the settings the simulator gives them (``sim/hardware.py``), then
    those that read this host whatever is simulated (``kept_in_simulation``: the network and disk
    estimates), as configured."""
    from .config import parse_config
    from .plugins import SourceContext, family

    plugins = family("source")
    sections = parse_config({"sources": hardware.sections}, "<simulated hardware>").sources
    clients = _drm_clients(hardware.proc_root, hardware.sysfs_root or "/") if hardware.proc_root else None
    ctx = SourceContext(read_processes=read_processes, libraries=hardware.libraries, drm_clients=clients)
    sources = [source for name in hardware.sections for source in plugins[name].factory(sections[name], ctx)]
    for source in sources:  # the simulated hardware is there: failing to open it is a failure, not "absent"
        source.optional = False
    return sources + [source for name, plugin in plugins.items() if plugin.kept_in_simulation
                      for source in plugin.factory(cfg.sources[name], SourceContext())]


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


def build_sources(scfg: dict[str, Any], read_processes: bool = False, proc_root: str = "/proc") -> list[DeviceSource]:
    """Every enabled power source, in registration order (NVML first). GPUs without a process list
    of their own read their processes' DRM client stats under ``proc_root`` (the mappers' /proc)."""
    from .plugins import SourceContext, family

    ctx = SourceContext(read_processes=read_processes, drm_clients=_drm_clients(proc_root))
    return [source for name, plugin in family("source").items() for source in plugin.factory(scfg[name], ctx)]


def _drm_clients(proc_root: str, sys_root: str = "/") -> Any:
    """The reader of the DRM client usage stats the sources of such GPUs share (one scan per sample);
    it reads nothing until a source asks."""
    from .attribution.fdinfo import DrmClientScanner

    return DrmClientScanner(proc_root, sys_root)


def make_collector(meter: Meter, cfg: dict[str, Any]) -> SnapshotCollector:
    return SnapshotCollector(
        lambda: meter.snapshot, embodied=bool(cfg.carbon.embodied.kg_co2e_per_device),
        water=cfg.carbon.wue_liters_per_kwh is not None)


def make_registry(meter: Meter, cfg: dict[str, Any]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(make_collector(meter, cfg))
    return registry

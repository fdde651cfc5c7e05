"""One registry per plug-in family: power sources, intensity providers, job mappers.

Each plug-in declares itself in its own module with ``register``: its name, its config
keys (a schema, see ``schema.py``), a factory and a one-line description; a source module
also declares the device kinds it reports (``kinds.register_kind``), and with them every rule
the meter, the recording rules, the alerts and the dashboards apply to them. ``config.py``
builds the configuration schema from the registries and ``startup.py`` builds what the config
enables from them (a simulated node too: ``sim/hardware.py`` says which sources read its fake
hardware), so adding a plug-in is one new module plus one line in ``BUILTIN_MODULES``
(docs/contributing.md).

Factories, by family:

- ``source``: ``factory(section, ctx) -> list[DeviceSource]`` — ``section`` is the validated
  ``sources.<name>`` mapping, ``ctx`` a ``SourceContext``; an empty list when not enabled. A source
  whose hardware may be absent marks its sources ``optional``: "nothing here" is not an error.
  ``kept_in_simulation``: it reads this host, not hardware a simulator imitates (the network and
  disk estimates), so a simulated node builds it from the config as a real one does.
- ``provider``: ``factory(zone, spec, where) -> IntensityProvider`` — ``spec`` is the
  validated ``carbon.zones.<zone>`` mapping, ``where`` its dotted key for errors. Live
  providers (``live=True``) are wrapped with polling and a fallback by ``carbon.select``;
  their factory returns the ``LiveSource`` to poll.
- ``mapper``: ``factory(acfg, ctx) -> Mapper`` — ``acfg`` is the validated ``attribution``
  mapping, ``ctx`` a ``MapperContext``; ``auto(acfg)`` says whether ``mappers: auto``
  enables it on this node.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

FAMILIES = ("source", "provider", "mapper")
# The built-in plug-ins: importing a module registers what it defines.
BUILTIN_MODULES = (
    "sources.nvml", "sources.amdgpu", "sources.intel_gpu", "sources.jetson", "sources.rapl", "sources.hwmon",
    "sources.battery", "sources.node", "sources.cpu_estimate", "sources.network", "sources.storage",
    "carbon.static", "carbon.file", "carbon.webapis",
    "attribution.mappers",
)


@dataclass(frozen=True)
class Plugin:
    family: str
    name: str
    factory: Callable[..., Any]
    doc: str
    schema: dict[str, Any] = field(default_factory=dict)
    # providers: groups of keys of which one must be set, e.g. (("token_env", "token_file"),)
    requires: tuple[tuple[str, ...], ...] = ()
    live: bool = False
    # mappers: whether `mappers: auto` enables it on this node
    auto: Callable[[Any], bool] | None = None
    # a check of the whole section beyond its keys: returns (dotted key, reason) or None
    validate: Callable[[Any], "tuple[str, str] | None"] | None = None
    # sources: built from the config on a simulated node too (they read this host)
    kept_in_simulation: bool = False


@dataclass(frozen=True)
class SourceContext:
    read_processes: bool = False  # attribution needs the processes on each GPU
    # Libraries to read instead of the host's, by source name: the simulator's NVML under --simulate.
    libraries: Mapping[str, Any] = field(default_factory=dict)
    # Per-process usage from the DRM client stats in /proc (sources.base.DrmClients), for GPUs whose
    # driver lists no processes; None where start-up gives none (a source then reports no processes).
    drm_clients: Any = None


@dataclass(frozen=True)
class MapperContext:
    proc_root: str
    teams: Any  # attribution.mappers.Teams


_REGISTRY: dict[str, dict[str, Plugin]] = {f: {} for f in FAMILIES}
_loaded = False


def register(family: str, name: str, factory: Callable[..., Any], doc: str, **kw: Any) -> Plugin:
    """Declare a plug-in; a second one of the same family and name is a programming error."""
    if family not in FAMILIES:
        raise ValueError(f"unknown plug-in family {family!r}")
    if name in _REGISTRY[family]:
        raise ValueError(f"{family} plug-in {name!r} registered twice")
    plugin = Plugin(family, name, factory, doc, **kw)
    _REGISTRY[family][name] = plugin
    return plugin


def unregister(family: str, name: str) -> None:
    """Forget a plug-in (tests that register one of their own)."""
    _REGISTRY[family].pop(name, None)


def family(name: str) -> dict[str, Plugin]:
    """The registered plug-ins of a family, in registration order."""
    load_builtins()
    return dict(_REGISTRY[name])


def load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{module}")

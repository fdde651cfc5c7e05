"""The YAML configuration: its schema, built from the core keys and the plug-ins' registries, and
the checks across keys (zones, providers, mappers). Every key is in docs/configuration.md.

The checking itself is the schema engine's (``schema.py``); errors name the file, the dotted key
and the reason (``ConfigError``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .address import listen_address_problem
from .carbon.zones import UnknownZone, country_code
from .errors import ConfigError
from .plugins import family
from .schema import DAY, HOUR, Problems, Section, key_name, leaf_keys, show, typed, validate
from .schema import between as _between
from .schema import hz as _hz
from .schema import not_empty as _not_empty
from .schema import one_of as _one_of
from .schema import positive as _positive
from .yamlio import read_yaml


def schema_keys(schema: dict[str, Any] | None = None, prefix: str = "") -> dict[str, tuple]:
    """Every leaf key of the schema, dotted."""
    return leaf_keys(schema or SCHEMA, prefix)


def _union(schemas: Any) -> dict[str, Any]:
    """Plug-ins' keys merged into one section; two plug-ins may share a key only with one meaning."""
    out: dict[str, Any] = {}
    for schema in schemas:
        for key, spec in schema.items():
            if key in out and out[key][:2] != spec[:2]:
                raise ValueError(f"plug-ins disagree on config key {key!r}")
            out.setdefault(key, spec)
    return out


# key -> (type, default, check) or a nested schema dict. A default of None means optional.
SCHEMA: dict[str, Any] = {
    "web": {
        "listen_address": (str, ":9842", listen_address_problem),
        "config_file": (str, None, None),
        "read_timeout_seconds": (float, 10.0, _between(0.1, HOUR)),
        "max_connections": (int, 64, _between(1, 10000)),
    },
    "sampling": {
        "interval_seconds": (float, 1.0, _between(0.01, HOUR)),
        "integration_hz": (float, 10.0, _hz),
        "slow_refresh_seconds": (float, 30.0, _positive(DAY)),
        "lost_device_retry_seconds": (float, 30.0, _positive(DAY)),
    },
    "sources": {name: plugin.schema for name, plugin in family("source").items()},
    "carbon": {
        "zone": (str, None, None),
        "zones": (dict, {}, None),
        "pue": (float, None, _between(1.0, 10.0)),
        "embodied": {
            "kg_co2e_per_device": (float, None, _positive(1e6)),
            "lifetime_years": (float, 5.0, _positive(100)),
        },
        "wue_liters_per_kwh": (float, None, _between(0.0, 100.0)),
        "forecast": {
            "horizon_hours": (float, 8.0, _positive(720)),
            "window_hours": (float, 1.0, _positive(168)),
        },
    },
    "state": {
        "path": (str, None, _not_empty),
        "persist_interval_seconds": (float, 60.0, _between(1.0, DAY)),
    },
    "log": {"level": (str, "info", _one_of("debug", "info", "warning", "error"))},
    "attribution": {
        "enabled": (bool, True, None),
        "mappers": (str, "auto", None),
        **_union(p.schema for p in family("mapper").values()),
        "expose_user": (bool, False, None),
        "idle_watts": (dict, {}, None),
        "linger_seconds": (float, 300.0, _between(30.0, 30 * DAY)),
        "work_dir": (str, None, None),
        "teams": {
            "namespaces": (dict, {}, None),
            "accounts": (dict, {}, None),
            "users": (dict, {}, None),
        },
    },
}
MAPPERS = tuple(family("mapper"))
LIVE_PROVIDERS = tuple(n for n, p in family("provider").items() if p.live)
STATIC_PROVIDERS = tuple(n for n, p in family("provider").items() if not p.live)
ZONE_SCHEMA: dict[str, Any] = {
    "provider": (str, ..., _one_of(*family("provider"))),
    **_union(p.schema for p in family("provider").values()),
    # every live provider
    "poll_interval_seconds": (float, 900.0, _between(10.0, DAY)),
    "timeout_seconds": (float, 10.0, _positive(300)),
    "retries": (int, 3, _between(0, 100)),
    "max_age_seconds": (float, 3600.0, _positive(30 * DAY)),
    "stale_after_seconds": (float, 7200.0, _positive(30 * DAY)),
    "fallback": (dict, None, None),
}


def _validate_zone(spec: Any, source: str, prefix: str, zone: str) -> dict[str, Any]:
    z = validate(spec, ZONE_SCHEMA, source, prefix)
    provider = z["provider"]
    plugin = family("provider")[provider]
    for alternatives in plugin.requires:
        if all(z[k] is None or z[k] == "" for k in alternatives):
            raise ConfigError(f"{source}: {prefix}{alternatives[0]}: required for provider {provider}"
                              + (f" (or {', '.join(alternatives[1:])})" if len(alternatives) > 1 else ""))
    if plugin.validate is not None and (problem := plugin.validate(z)):
        raise ConfigError(f"{source}: {prefix}{problem[0]}: {problem[1]}")
    if plugin.live:
        if z["fallback"] is not None:
            if z["fallback"].get("provider") in LIVE_PROVIDERS:
                raise ConfigError(f"{source}: {prefix}fallback.provider: must be "
                                  f"{', '.join(STATIC_PROVIDERS[:-1])} or {STATIC_PROVIDERS[-1]}")
            z["fallback"] = _validate_zone(z["fallback"], source, f"{prefix}fallback.", zone)
        return z
    if z["fallback"] is not None:
        raise ConfigError(f"{source}: {prefix}fallback: only live providers take a fallback")
    if provider == "country":
        try:
            z["country"] = country_code(z["country"] or str(zone))
        except UnknownZone as err:
            raise ConfigError(f"{source}: {prefix}country: {err}") from None
    return z


def _validate_zones(cfg: dict[str, Any], source: str) -> None:
    for zone in cfg["carbon"]["zones"]:
        if not isinstance(zone, str):  # YAML reads NO (Norway), ON, YES as booleans
            raise ConfigError(f"{source}: carbon.zones.{show(zone)}: a zone name must be a string; quote it "
                              f"(e.g. 'NO')")
    for zone, spec in cfg["carbon"]["zones"].items():
        cfg["carbon"]["zones"][zone] = _validate_zone(spec, source, f"carbon.zones.{zone}.", str(zone))


def check_zone(cfg: dict[str, Any], source: str) -> None:
    """The selected zone must be defined in carbon.zones or be a country of the bundled table
    (ISO 3166 alpha-2 or alpha-3, any case); a country is normalised to its alpha-3 code."""
    zone = cfg["carbon"]["zone"]
    if zone is None or zone in cfg["carbon"]["zones"]:
        return
    same = [k for k in cfg["carbon"]["zones"] if isinstance(k, str) and k.lower() == zone.lower()]
    if same:  # a zone defined as "de" and selected as "DE" is that zone, never the country table's
        cfg["carbon"]["zone"] = same[0]
        return
    try:
        cfg["carbon"]["zone"] = country_code(zone)
    except UnknownZone as err:
        hint = "" if "carbon.zones" in str(err) else "; or define it under carbon.zones"
        raise ConfigError(f"{source}: carbon.zone: {err}{hint}") from None


def _validate_attribution(a: dict[str, Any], source: str) -> None:
    if a["mappers"] != "auto":
        names = [m.strip() for m in a["mappers"].split(",") if m.strip()]
        bad = [m for m in names if m not in MAPPERS]
        if bad or not names:
            raise ConfigError(f"{source}: attribution.mappers: unknown mapper(s) {show(', '.join(bad)) or '(none)'}; "
                              f"use 'auto' or a comma-separated list of {', '.join(MAPPERS)}")
        if "mapping_dir" in names and not a["mapping_dir"]:
            raise ConfigError(f"{source}: attribution.mapping_dir: required by the mapping_dir mapper")
    for model, watts in a["idle_watts"].items():
        if isinstance(watts, bool) or not isinstance(watts, (int, float)) or not 0 <= watts <= 10000:
            raise ConfigError(f"{source}: attribution.idle_watts.{key_name(model)}: expected watts in [0, 10000], "
                              f"got {show(watts)}")
    for kind, table in a["teams"].items():
        for key, team in table.items():
            if not isinstance(team, str):
                raise ConfigError(f"{source}: attribution.teams.{kind}.{key_name(key)}: expected a team name, "
                                  f"got {show(team)}")


def _zone(spec: dict[str, Any] | None) -> Section | None:
    if spec is None:
        return None
    return typed({**spec, "fallback": _zone(spec["fallback"])}, ZONE_SCHEMA, "ZoneConfig")


def _typed_config(cfg: dict[str, Any]) -> Section:
    carbon = {**cfg["carbon"], "zones": {zone: _zone(spec) for zone, spec in cfg["carbon"]["zones"].items()}}
    return typed({**cfg, "carbon": carbon}, SCHEMA, "Config")


def parse_config(data: Any, source: str = "<config>") -> Section:
    """Validate ``data``, fill defaults, and return the typed configuration (``Config``: one frozen
    section per schema section, fields named as the documented keys). Raises ConfigError listing
    every problem found."""
    cfg = validate(data, SCHEMA, source)
    problems = Problems(source)
    for check in (lambda: _validate_attribution(cfg["attribution"], source), lambda: _validate_zones(cfg, source),
                  lambda: check_zone(cfg, source)):
        try:
            check()
        except ConfigError as err:
            problems.messages.append(str(err))  # already "file: key: reason"
    problems.raise_if_any()
    return _typed_config(cfg)


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> Section:
    """Load and validate a config file (``None``: the defaults); ``overrides`` (command-line flags,
    ``{section: {key: value}}``) are merged in first and validated exactly like the file's keys."""
    data: Any = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        data = read_yaml(Path(path))
    if overrides:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: (top level): expected a mapping")
        for section, values in overrides.items():
            merged = data.get(section) if isinstance(data.get(section), dict) else {}
            data[section] = {**merged, **values}
        source = f"{source} + command line" if path is not None else "<command line>"
    return parse_config(data, source)

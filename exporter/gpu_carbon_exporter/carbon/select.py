"""Builds the intensity provider for the node's zone from the validated config."""
from __future__ import annotations

import logging
from typing import Any

from ..config import WORLD_AVERAGE_G_PER_KWH, ConfigError, read_secret
from .base import IntensityProvider
from .static import StaticIntensity, country_intensity

log = logging.getLogger(__name__)


def _static(zone: str, spec: dict[str, Any] | None, where: str) -> IntensityProvider:
    if spec is None:
        return StaticIntensity(zone, WORLD_AVERAGE_G_PER_KWH, source="default")
    if spec["provider"] == "static":
        return StaticIntensity(zone, spec["g_per_kwh"])
    if spec["provider"] == "file":
        from .file import FileIntensity

        try:
            return FileIntensity(zone, spec["path"])
        except ValueError as err:
            raise ConfigError(f"{where}.path: {err}") from err
    return country_intensity(zone, spec["country"])


def _live(zone: str, spec: dict[str, Any], carbon_cfg: dict[str, Any], where: str) -> IntensityProvider:
    from .live import PollingIntensity
    from .webapis import ElectricityMaps, UKCarbonIntensity, WattTime

    base = {"base_url": spec["base_url"]} if spec["base_url"] else {}
    kind = spec["provider"]
    if kind == "electricitymaps":
        source = ElectricityMaps(read_secret(spec, "token_env", "token_file", where), zone=spec["zone_id"],
                                 lat=spec["lat"], lon=spec["lon"], forecast=spec["forecast"],
                                 emission_factor_type=spec["emission_factor_type"], **base)
    elif kind == "watttime":
        source = WattTime(spec["username"], read_secret(spec, "password_env", "password_file", where),
                          spec["region"], **base)
    else:
        source = UKCarbonIntensity(region_id=spec["region_id"], postcode=spec["postcode"],
                                   forecast=spec["forecast"], **base)
    fc = carbon_cfg["forecast"]
    return PollingIntensity(zone, source, _static(zone, spec["fallback"], f"{where}.fallback"),
                            poll_interval_s=spec["poll_interval_seconds"], timeout_s=spec["timeout_seconds"],
                            retries=spec["retries"], max_age_s=spec["max_age_seconds"],
                            stale_after_s=spec["stale_after_seconds"],
                            forecast_horizon_s=fc["horizon_hours"] * 3600, forecast_window_s=fc["window_hours"] * 3600)


def build_provider(carbon_cfg: dict[str, Any]) -> IntensityProvider:
    zone = carbon_cfg["zone"]
    if zone is None:
        log.warning("no carbon.zone configured: using the world average %.0f gCO2e/kWh "
                    "(source=\"default\"); set carbon.zone for real figures", WORLD_AVERAGE_G_PER_KWH)
        return StaticIntensity("world", WORLD_AVERAGE_G_PER_KWH, source="default")
    spec = carbon_cfg["zones"].get(zone)
    if spec is None:
        return country_intensity(zone, zone)
    where = f"carbon.zones.{zone}"
    if spec["provider"] in ("electricitymaps", "watttime", "ukcarbonintensity"):
        return _live(zone, spec, carbon_cfg, where)
    return _static(zone, spec, where)

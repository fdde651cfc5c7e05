"""Builds the intensity provider for the node's zone from the validated config."""
from __future__ import annotations

import logging
from typing import Any

from ..plugins import family
from .base import WORLD_AVERAGE_G_PER_KWH, IntensityProvider
from .static import StaticIntensity, country_intensity

log = logging.getLogger(__name__)


def _static(zone: str, spec: dict[str, Any] | None, where: str) -> IntensityProvider:
    """A zone spec of a non-live provider (a live provider's fallback), or the world average."""
    if spec is None:
        return StaticIntensity(zone, WORLD_AVERAGE_G_PER_KWH, source="default")
    return family("provider")[spec["provider"]].factory(zone, spec, where)


def _live(zone: str, spec: dict[str, Any], carbon_cfg: dict[str, Any], where: str) -> IntensityProvider:
    from .live import PollingIntensity

    source = family("provider")[spec["provider"]].factory(zone, spec, where)
    fc = carbon_cfg["forecast"]
    return PollingIntensity(zone, source, _static(zone, spec["fallback"], f"{where}.fallback"),
                            poll_interval_seconds=spec["poll_interval_seconds"],
                            timeout_seconds=spec["timeout_seconds"],
                            retries=spec["retries"], max_age_seconds=spec["max_age_seconds"],
                            stale_after_seconds=spec["stale_after_seconds"],
                            horizon_hours=fc["horizon_hours"], window_hours=fc["window_hours"])


def build_provider(carbon_cfg: dict[str, Any]) -> IntensityProvider:
    """The intensity provider of the node's zone: a registered provider (polled, with its fallback,
    when live), the bundled country table for a bare country code, or the world average."""
    zone = carbon_cfg["zone"]
    if zone is None:
        log.warning("no carbon.zone configured: using the world average %.0f gCO2e/kWh "
                    "(source=\"default\"); set carbon.zone for real figures", WORLD_AVERAGE_G_PER_KWH)
        return StaticIntensity("world", WORLD_AVERAGE_G_PER_KWH, source="default")
    spec = carbon_cfg["zones"].get(zone)
    if spec is None:
        return country_intensity(zone, zone)
    where = f"carbon.zones.{zone}"
    if family("provider")[spec["provider"]].live:
        return _live(zone, spec, carbon_cfg, where)
    return _static(zone, spec, where)

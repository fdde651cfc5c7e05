"""Builds the intensity provider for the node's zone from the validated config."""
from __future__ import annotations

import logging
from typing import Any

from ..config import WORLD_AVERAGE_G_PER_KWH, ConfigError
from .base import IntensityProvider
from .static import StaticIntensity, country_intensity

log = logging.getLogger(__name__)


def build_provider(carbon_cfg: dict[str, Any]) -> IntensityProvider:
    zone = carbon_cfg["zone"]
    if zone is None:
        log.warning("no carbon.zone configured: using the world average %.0f gCO2e/kWh "
                    "(source=\"default\"); set carbon.zone for real figures", WORLD_AVERAGE_G_PER_KWH)
        return StaticIntensity("world", WORLD_AVERAGE_G_PER_KWH, source="default")
    spec = carbon_cfg["zones"].get(zone)
    if spec is None:
        return country_intensity(zone, zone)
    if spec["provider"] == "static":
        return StaticIntensity(zone, spec["g_per_kwh"])
    if spec["provider"] == "file":
        from .file import FileIntensity

        try:
            return FileIntensity(zone, spec["path"])
        except ValueError as err:
            raise ConfigError(f"carbon.zones.{zone}.path: {err}") from err
    return country_intensity(zone, spec["country"])

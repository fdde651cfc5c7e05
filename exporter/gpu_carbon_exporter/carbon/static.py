"""Static intensities: a fixed value, the bundled per-country table, a timeline."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Callable

from ..plugins import register
from ..schema import between
from .base import Intensity, IntensityProvider
from .timeline import MAX_G_PER_KWH, Timeline

COUNTRY_ATTRIBUTION = "Our World in Data, based on Ember and Energy Institute, CC BY 4.0"


@lru_cache(maxsize=1)
def country_table() -> dict[str, dict]:
    """ISO-3 code -> {"name", "g_per_kwh", "year"}; zero (no-data) entries are excluded."""
    text = resources.files(__package__).joinpath("data/country_intensity.json").read_text()
    return json.loads(text)["countries"]


class StaticIntensity(IntensityProvider):
    name = "static"

    def __init__(self, zone: str, g_per_kwh: float, source: str = "static") -> None:
        self._value = Intensity(float(g_per_kwh), zone, source)

    def current(self, now: float) -> Intensity:
        return self._value


def country_intensity(zone: str, iso3: str) -> StaticIntensity:
    """The bundled table's value for ``iso3``. Raises KeyError for unknown or no-data codes."""
    entry = country_table()[iso3.upper()]
    return StaticIntensity(zone, entry["g_per_kwh"], source="country_table")


class TimelineIntensity(IntensityProvider):
    """A timeline over relative time ``t = now - epoch`` (a simulated scenario's zone)."""

    name = "timeline"

    def __init__(self, zone: str, timeline: Timeline, epoch: Callable[[], float],
                 source: str = "scenario") -> None:
        self.zone, self.timeline, self.epoch, self.source = zone, timeline, epoch, source

    def _at(self, t: float) -> Intensity:
        return Intensity(self.timeline.value_at(t), self.zone, self.source)

    def current(self, now: float) -> Intensity:
        return self._at(now - self.epoch())

    def segments(self, t0: float, t1: float) -> list[tuple[float, float, Intensity]]:
        e = self.epoch()
        pieces = self.timeline.segments(t0 - e, t1 - e)
        return [(a + e, b + e, Intensity(v, self.zone, self.source)) for a, b, v in pieces]


def _static(zone: str, spec: dict, where: str) -> IntensityProvider:
    return StaticIntensity(zone, spec["g_per_kwh"])


def _country(zone: str, spec: dict, where: str) -> IntensityProvider:
    return country_intensity(zone, spec["country"])


register("provider", "static", _static, "a fixed value", requires=(("g_per_kwh",),),
         schema={"g_per_kwh": (float, None, between(0, MAX_G_PER_KWH, open_lo=True))})
register("provider", "country", _country, "the bundled per-country table (Our World in Data, CC BY 4.0)",
         schema={"country": (str, None, None)})

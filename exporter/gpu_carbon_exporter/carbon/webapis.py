"""Live intensity APIs: Electricity Maps, WattTime and the UK Carbon Intensity API.

Each ``fetch`` returns a ``Timeline``: the current value and any forecast the same answer
carries, as (start time, gCO2e/kWh) points, each holding until the next; a forecast from a
separate request comes from ``forecast_points``, asked for after the current value is
published. Every failure is a ``ProviderError``.
"""
from __future__ import annotations

import datetime as dt
import time
from abc import ABC, abstractmethod
from ..plugins import register
from ..schema import between, http_url, one_of
from ..secret import read_secret
from .http import JsonHttp, ProviderError, field, number, timestamp
from .timeline import Timeline

LBS_PER_MWH_TO_G_PER_KWH = 0.45359237


class LiveSource(ABC):
    name = "live"
    signal = "average"

    @abstractmethod
    def fetch(self, http: JsonHttp, now: float) -> Timeline:
        """The current value, with any forecast the same answer carries. Raises ProviderError."""

    def forecast_points(self, http: JsonHttp, now: float) -> list[tuple[float, float]]:
        """Forecast points from a separate, optional request ([] without one); the poller asks
        for them only after it has published ``fetch``'s value. Raises ProviderError."""
        return []


def with_forecast(now_point: tuple[float, float], forecast: list[tuple[float, float]]) -> Timeline:
    """The current point followed by the forecast's later points."""
    points = sorted({now_point[0]: now_point[1], **{t: v for t, v in forecast if t > now_point[0]}}.items())
    return Timeline(tuple(points))


class ElectricityMaps(LiveSource):
    """Electricity Maps v3: ``carbon-intensity/latest`` (and ``forecast`` where the token allows)."""

    name = "electricitymaps"

    def __init__(self, token: str, *, zone: str | None = None, lat: float | None = None, lon: float | None = None,
                 emission_factor_type: str = "lifecycle", forecast: bool = False,
                 base_url: str = "https://api.electricitymap.org") -> None:
        self.token, self.forecast, self.base = token, forecast, base_url.rstrip("/")
        self.params: dict[str, str] = {"emissionFactorType": emission_factor_type}
        if zone:
            self.params["zone"] = zone
        else:
            self.params.update(lat=str(lat), lon=str(lon))

    def fetch(self, http: JsonHttp, now: float) -> Timeline:
        latest = http.get(f"{self.base}/v3/carbon-intensity/latest", params=self.params,
                          headers={"auth-token": self.token})
        return Timeline(((timestamp(field(latest, "datetime"), "datetime"),
                          number(field(latest, "carbonIntensity"), "carbonIntensity")),))

    def forecast_points(self, http: JsonHttp, now: float) -> list[tuple[float, float]]:
        if not self.forecast:  # not every token's plan includes forecasts
            return []
        data = http.get(f"{self.base}/v3/carbon-intensity/forecast", params=self.params,
                        headers={"auth-token": self.token})
        return [(timestamp(field(p, "datetime"), f"forecast[{i}].datetime"),
                 number(field(p, "carbonIntensity"), f"forecast[{i}].carbonIntensity"))
                for i, p in enumerate(field(data, "forecast"))]


class WattTime(LiveSource):
    """WattTime v3 marginal emissions (``co2_moer``), from ``/v3/forecast``; lbs/MWh -> g/kWh."""

    name = "watttime"
    signal = "marginal"
    TOKEN_LIFETIME_S = 25 * 60  # tokens last 30 minutes; renew early

    def __init__(self, username: str, password: str, region: str, *,
                 base_url: str = "https://api.watttime.org") -> None:
        self.username, self.password, self.region = username, password, region
        self.base = base_url.rstrip("/")
        self._token: str | None = None
        self._token_at = 0.0

    def _login(self, http: JsonHttp) -> str:
        data = http.get(f"{self.base}/login", auth=(self.username, self.password))
        token = field(data, "token")
        if not isinstance(token, str):
            raise ProviderError("malformed", "login token is not a string")
        self._token, self._token_at = token, time.monotonic()
        return token

    def _forecast(self, http: JsonHttp) -> dict:
        if self._token is None or time.monotonic() - self._token_at > self.TOKEN_LIFETIME_S:
            self._login(http)
        params = {"region": self.region, "signal_type": "co2_moer"}
        try:
            return http.get(f"{self.base}/v3/forecast", params=params,
                            headers={"Authorization": f"Bearer {self._token}"})
        except ProviderError as err:
            if err.reason != "auth":
                raise
            self._login(http)  # expired or revoked token: log in again, once
            return http.get(f"{self.base}/v3/forecast", params=params,
                            headers={"Authorization": f"Bearer {self._token}"})

    def fetch(self, http: JsonHttp, now: float) -> Timeline:
        data = self._forecast(http)
        units = field(data, "meta", "units")
        if units != "lbs_co2_per_mwh":
            raise ProviderError("units", f"expected lbs_co2_per_mwh, got {units!r}")
        if field(data, "meta", "signal_type") != "co2_moer":
            raise ProviderError("units", "expected signal_type co2_moer")
        points = []
        for i, p in enumerate(field(data, "data")):
            lbs = field(p, "value")
            grams = (lbs * LBS_PER_MWH_TO_G_PER_KWH if isinstance(lbs, (int, float)) and not isinstance(lbs, bool)
                     else lbs)
            points.append((timestamp(field(p, "point_time"), f"data[{i}].point_time"),
                           number(grams, f"data[{i}].value (converted to gCO2e/kWh)")))
        if not points:
            raise ProviderError("missing_field", "forecast has no data points")
        points.sort()
        current = max((p for p in points if p[0] <= now), default=points[0])
        return with_forecast(current, [p for p in points if p[0] > current[0]])


class UKCarbonIntensity(LiveSource):
    """UK Carbon Intensity API (National Energy System Operator), no key: national or regional."""

    name = "ukcarbonintensity"

    def __init__(self, *, region_id: int | None = None, postcode: str | None = None, forecast: bool = True,
                 base_url: str = "https://api.carbonintensity.org.uk") -> None:
        self.region_id, self.postcode, self.forecast = region_id, postcode, forecast
        self.base = base_url.rstrip("/")

    def _scope(self) -> str:
        if self.region_id is not None:
            return f"regionid/{self.region_id}"
        return f"postcode/{self.postcode}" if self.postcode else ""

    @staticmethod
    def _periods(data: object) -> list:
        """The half-hour entries of a national or regional response."""
        body = field(data, "data")
        if isinstance(body, dict):  # regional forecast: {"data": {"regionid": .., "data": [...]}}
            return field(body, "data")
        if body and isinstance(body[0], dict) and "data" in body[0] and "intensity" not in body[0]:
            return field(body, 0, "data")  # regional now: {"data": [{"regionid": .., "data": [...]}]}
        return body

    @staticmethod
    def _point(entry: object, i: int) -> tuple[float, float]:
        intensity = field(entry, "intensity")
        value = intensity.get("actual") if isinstance(intensity, dict) else None
        if value is None:
            value = field(entry, "intensity", "forecast")
        return timestamp(field(entry, "from"), f"data[{i}].from"), number(value, f"data[{i}].intensity")

    def fetch(self, http: JsonHttp, now: float) -> Timeline:
        scope = self._scope()
        now_url = f"{self.base}/regional/{scope}" if scope else f"{self.base}/intensity"
        periods = self._periods(http.get(now_url))
        if not periods:
            raise ProviderError("missing_field", "no intensity period in the response")
        return Timeline((self._point(periods[0], 0),))

    def forecast_points(self, http: JsonHttp, now: float) -> list[tuple[float, float]]:
        if not self.forecast:
            return []
        scope = self._scope()
        start = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        url = (f"{self.base}/regional/intensity/{start}/fw24h/{scope}" if scope
               else f"{self.base}/intensity/{start}/fw24h")
        return [self._point(e, i) for i, e in enumerate(self._periods(http.get(url)))]


def _base(spec: dict) -> dict:
    return {"base_url": spec["base_url"]} if spec["base_url"] else {}


def _electricitymaps(zone: str, spec: dict, where: str) -> LiveSource:
    return ElectricityMaps(read_secret(spec, "token_env", "token_file", where), zone=spec["zone_id"],
                           lat=spec["lat"], lon=spec["lon"], forecast=spec["forecast"],
                           emission_factor_type=spec["emission_factor_type"], **_base(spec))


def _watttime(zone: str, spec: dict, where: str) -> LiveSource:
    return WattTime(spec["username"], read_secret(spec, "password_env", "password_file", where), spec["region"],
                    **_base(spec))


def _uk(zone: str, spec: dict, where: str) -> LiveSource:
    return UKCarbonIntensity(region_id=spec["region_id"], postcode=spec["postcode"], forecast=spec["forecast"],
                             **_base(spec))


def _em_location(spec: dict) -> tuple[str, str] | None:
    if not spec["zone_id"] and (spec["lat"] is None or spec["lon"] is None):
        return "zone_id", "required for provider electricitymaps (or lat and lon)"
    return None


_URL = {"base_url": (str, None, http_url)}
_FORECAST = {"forecast": (bool, True, None)}
register("provider", "electricitymaps", _electricitymaps, "Electricity Maps v3: latest and forecast", live=True,
         requires=(("token_env", "token_file"),), validate=_em_location, schema={
             **_URL, "zone_id": (str, None, None), "lat": (float, None, between(-90, 90)),
             "lon": (float, None, between(-180, 180)),
             "emission_factor_type": (str, "lifecycle", one_of("lifecycle", "direct")), **_FORECAST,
             "token_env": (str, None, None), "token_file": (str, None, None)})
register("provider", "watttime", _watttime, "WattTime v3 marginal emissions (co2_moer)", live=True,
         requires=(("region",), ("username",), ("password_env", "password_file")), schema={
             **_URL, "region": (str, None, None), "username": (str, None, None),
             "password_env": (str, None, None), "password_file": (str, None, None)})
register("provider", "ukcarbonintensity", _uk, "UK Carbon Intensity API: national, region or postcode", live=True,
         schema={**_URL, "region_id": (int, None, between(1, 17, hint=", a GB region id")),
                 "postcode": (str, None, None), **_FORECAST})

"""Polling a live intensity source, with a fallback chain: live -> last good value -> static.

A background thread polls on its own interval with retries, exponential
backoff with jitter, and honours 429 Retry-After. ``current`` and
``segments`` only read the last good timeline, so neither the sampler nor a
scrape ever waits on the network.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

from .base import Intensity, IntensityProvider
from .http import JsonHttp, ProviderError
from .timeline import Timeline
from .webapis import LiveSource, with_forecast

log = logging.getLogger(__name__)

# How far ahead of our clock a provider's current value may be stamped: a data period starting
# a little early (WattTime's 5-minute points) plus clock skew. Anything later is no current value.
MAX_AHEAD_S = 3600.0


@dataclass(frozen=True)
class ProviderStats:
    provider: str
    requests: int
    successes: int
    errors: dict[str, int]
    age_s: float | None  # seconds since the last good fetch; None before the first


@dataclass(frozen=True)
class Forecast:
    """Carbon-aware hints over the next ``horizon_s``: min and time-weighted mean (g/kWh),
    and seconds until the lowest-intensity window of ``window_s`` starts."""

    horizon_s: float
    window_s: float
    min_g_per_kwh: float
    mean_g_per_kwh: float
    best_window_in_s: float


class PollingIntensity(IntensityProvider):
    def __init__(self, zone: str, source: LiveSource, fallback: IntensityProvider, *,
                 poll_interval_seconds: float = 900.0, timeout_seconds: float = 10.0, retries: int = 3,
                 backoff_s: float = 2.0, max_age_seconds: float = 3600.0, stale_after_seconds: float = 7200.0,
                 horizon_hours: float = 8.0, window_hours: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.zone, self.source, self.fallback, self.clock = zone, source, fallback, clock
        self.name = source.name
        self.poll_interval_seconds, self.retries, self.backoff_s = poll_interval_seconds, retries, backoff_s
        self.max_age_seconds, self.stale_after_seconds = max_age_seconds, stale_after_seconds
        self.forecast_horizon_s, self.forecast_window_s = horizon_hours * 3600.0, window_hours * 3600.0
        self.http = JsonHttp(timeout_seconds)
        self._timeline: Timeline | None = None
        self._fetched_at: float | None = None
        self._last_ok = False
        self._requests = self._successes = 0
        self._errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._forecast_cache: tuple | None = None
        self._first_poll = threading.Event()

    # -- polling ---------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"intensity-{self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def prime(self) -> None:
        self.poll()

    def wait_ready(self, timeout_seconds: float) -> bool:
        return self._first_poll.wait(timeout_seconds) and self._last_ok

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._first_poll.set()
            self._stop.wait(self.poll_interval_seconds)

    def poll(self) -> bool:
        """One poll with retries; True when a good current value was stored. The value is published
        before any forecast is asked for, so a slow or failing forecast never holds it back."""
        if not self._poll_current():
            return False
        if not self._stop.is_set():
            self._poll_forecast()
        return True

    def _poll_current(self) -> bool:
        for attempt in range(self.retries + 1):
            if self._stop.is_set():
                return False
            self._requests += 1
            try:
                timeline = self.source.fetch(self.http, self.clock())
                self._check_time(timeline)
            except ProviderError as err:
                self._errors[err.reason] += 1
                self._last_ok = False
                log.warning("%s (zone %s) attempt %d/%d failed [%s]: %s", self.name, self.zone, attempt + 1,
                            self.retries + 1, err.reason, err)
                if attempt < self.retries:
                    self._stop.wait(self._delay(attempt, err))
                continue
            except Exception:  # a parsing bug must not kill the poller
                self._errors["internal"] += 1
                self._last_ok = False
                log.exception("%s (zone %s): unexpected error", self.name, self.zone)
                if attempt < self.retries:
                    self._stop.wait(self.backoff_s * 2 ** attempt)  # never retry at once
                continue
            self._timeline, self._fetched_at, self._last_ok = timeline, self.clock(), True
            self._successes += 1
            return True
        log.error("%s (zone %s): all attempts failed; serving %s", self.name, self.zone,
                  "the last good value" if self._usable(self.clock()) else "the fallback")
        return False

    def _poll_forecast(self) -> None:
        """The optional forecast request: its failure is counted and logged, never fatal to the poll."""
        current = self._timeline
        try:
            points = self.source.forecast_points(self.http, self.clock())
        except ProviderError as err:
            self._errors[err.reason] += 1
            log.warning("%s (zone %s): forecast unavailable [%s]: %s; using the current value only", self.name,
                        self.zone, err.reason, err)
            return
        except Exception:  # a parsing bug must not kill the poller
            self._errors["internal"] += 1
            log.exception("%s (zone %s): unexpected error in the forecast", self.name, self.zone)
            return
        if points and current is not None:
            self._timeline = with_forecast(current.points[0], points)

    def _delay(self, attempt: int, err: ProviderError) -> float:
        if err.retry_after is not None:
            return max(err.retry_after, self.backoff_s)  # "Retry-After: 0" must not become a hot loop
        return self.backoff_s * 2 ** attempt * random.uniform(1.0, 1.5)

    def _check_time(self, timeline: Timeline) -> None:
        now, at = self.clock(), timeline.points[0][0]
        if now - at > self.stale_after_seconds:
            raise ProviderError("stale", f"data is {now - at:.0f}s old (more than {self.stale_after_seconds:.0f}s)")
        if at - now > MAX_AHEAD_S:
            raise ProviderError("out_of_range", f"the current value's time is {at - now:.0f}s in the future "
                                f"(more than {MAX_AHEAD_S:.0f}s: a wrong clock or date at the provider)")

    # -- serving ---------------------------------------------------------------
    def _usable(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at <= self.max_age_seconds

    def current(self, now: float) -> Intensity:
        timeline = self._timeline
        if timeline is not None and self._usable(now):
            return Intensity(timeline.value_at(now), self.zone, self.name, self.source.signal,
                             fallback=not self._last_ok, observed_at=self._fetched_at)
        return replace(self.fallback.current(now), zone=self.zone, fallback=True)

    def segments(self, t0: float, t1: float) -> list[tuple[float, float, Intensity]]:
        timeline = self._timeline
        if timeline is None or not self._usable(t0):
            return [(t0, t1, self.current(t0))]
        return [(a, b, self.current(a)) for a, b, _ in timeline.segments(t0, t1)]

    def healthy(self) -> bool:
        return self._last_ok

    def stats(self) -> ProviderStats:
        age = None if self._fetched_at is None else max(self.clock() - self._fetched_at, 0.0)
        return ProviderStats(self.name, self._requests, self._successes, dict(self._errors), age)

    FORECAST_REFRESH_S = 30.0

    def forecast(self, now: float) -> Forecast | None:
        """Hints from the forecast part of the timeline, or None without one; recomputed at most
        every 30 s (or when a new timeline arrives), since the meter asks every sample."""
        cached = self._forecast_cache
        if cached and cached[0] is self._timeline and 0 <= now - cached[1] < self.FORECAST_REFRESH_S:
            fc = cached[2]
            return None if fc is None else replace(fc,
                                                   best_window_in_s=max(fc.best_window_in_s - (now - cached[1]), 0.0))
        fc = self._compute_forecast(now)
        self._forecast_cache = (self._timeline, now, fc)
        return fc

    def _compute_forecast(self, now: float) -> Forecast | None:
        timeline = self._timeline
        if timeline is None or len(timeline.points) < 2 or not self._usable(now):
            return None
        end = now + self.forecast_horizon_s
        edges = [now, *timeline.changes(now, end), min(end, max(timeline.end, now))]
        spans = [(a, b, timeline.value_at(a)) for a, b in zip(edges, edges[1:]) if b > a]
        if not spans:
            return None
        total = sum(b - a for a, b, _ in spans)
        mean = sum((b - a) * v for a, b, v in spans) / total
        best_start, best = now, float("inf")
        for start in [now, *timeline.changes(now, end)]:
            stop = start + self.forecast_window_s
            if stop > edges[-1] + 1e-9:
                break
            cuts = [start, *timeline.changes(start, stop), stop]
            avg = sum((b - a) * timeline.value_at(a) for a, b in zip(cuts, cuts[1:])) / self.forecast_window_s
            if avg < best - 1e-12:
                best_start, best = start, avg
        return Forecast(self.forecast_horizon_s, self.forecast_window_s, min(v for _, _, v in spans), mean,
                        best_start - now)

"""The one intensity timeline type, its bound and its time parser, for every provider.

A ``Timeline`` is piecewise constant: points (time, gCO2e/kWh), each value holding until
the next point. Live APIs give absolute unix times; the file provider too; the simulator
gives times relative to its epoch, optionally repeating every ``period_s``.
"""
from __future__ import annotations

import bisect
import datetime as dt
import functools
import math
from dataclasses import dataclass

# Plausible grid intensity, gCO2e/kWh: the dirtiest grids are near 1 200; above 2 500 is an error.
MAX_G_PER_KWH = 2500.0


def intensity_problem(value: object) -> str | None:
    """Why ``value`` is no plausible intensity (gCO2e/kWh), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"not a number: {value!r:.40}"
    if not 0 <= value <= MAX_G_PER_KWH or value != value:
        return f"{value} gCO2e/kWh is outside [0, {MAX_G_PER_KWH:g}]"
    return None


def parse_time(value: object) -> float:
    """Unix seconds from a number or an ISO 8601 string (``Z`` allowed, the UK API's
    ``2018-01-20T12:00Z`` too; no zone means UTC). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        t = float(value)
    else:
        text = str(value).strip()
        try:
            t = float(text)
        except ValueError:
            stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=dt.timezone.utc)
            t = stamp.timestamp()
    if not math.isfinite(t):
        raise ValueError(f"not a finite time: {value!r:.40}")
    return t


@dataclass(frozen=True)
class Timeline:
    """Points (start time, gCO2e/kWh), sorted by time, each holding until the next; before the
    first point the first value holds. With ``period_s`` the points (from t = 0) repeat."""

    points: tuple[tuple[float, float], ...]
    period_s: float | None = None

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a timeline needs at least one point")
        if any(b[0] <= a[0] for a, b in zip(self.points, self.points[1:])):
            raise ValueError("timeline times must increase strictly")
        if self.period_s is not None and (self.points[0][0] != 0 or self.points[-1][0] >= self.period_s):
            raise ValueError("a repeating timeline's points must lie in [0, period)")

    @functools.cached_property
    def _starts(self) -> list[float]:
        return [s for s, _ in self.points]

    def value_at(self, t: float) -> float:
        if self.period_s is not None:
            t = t % self.period_s
        i = bisect.bisect_right(self._starts, t) - 1
        return self.points[max(i, 0)][1]

    def changes(self, t0: float, t1: float) -> list[float]:
        """Times in (t0, t1) where the value may change."""
        if self.period_s is None:
            return self._starts[bisect.bisect_right(self._starts, t0):bisect.bisect_left(self._starts, t1)]
        out: list[float] = []
        k = math.floor(t0 / self.period_s)
        while k * self.period_s < t1:
            base = k * self.period_s
            out += [base + s for s in self._starts if t0 < base + s < t1]
            k += 1
        return out

    def segments(self, t0: float, t1: float) -> list[tuple[float, float, float]]:
        """[t0, t1] cut where the value changes: (start, end, gCO2e/kWh) for each piece."""
        edges = [t0, *self.changes(t0, t1), t1]
        return [(a, b, self.value_at(a)) for a, b in zip(edges, edges[1:])]

    @property
    def end(self) -> float:
        """End of the data: the last point lasts as long as the one before it."""
        if len(self.points) < 2:
            return self.points[-1][0]
        return 2 * self.points[-1][0] - self.points[-2][0]

"""Intensity from a file: a CSV or JSON time series of (time, gCO2e/kWh), piecewise constant.

CSV: ``time,g_per_kwh`` rows (header optional). JSON: a list of
``{"time": ..., "g_per_kwh": ...}``. Times are unix seconds or ISO 8601. Each
value holds from its time until the next one; the file is re-read when it
changes, so it can replay history or be fed by an offline site's own tooling.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import os
import threading
from pathlib import Path

from ..sim.patterns import PiecewiseConstant
from .base import Intensity, IntensityProvider

log = logging.getLogger(__name__)


def _time(value: object) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.timezone.utc)
        return stamp.timestamp()


def parse_series(text: str, source: str) -> list[tuple[float, float]]:
    """Sorted (unix time, g/kWh) points; raises ValueError naming the source and row."""
    rows: list[tuple[float, float]] = []
    if text.lstrip().startswith("["):
        items = [(i, (o.get("time"), o.get("g_per_kwh"))) for i, o in enumerate(json.loads(text))]
    else:
        items = [(i, r) for i, r in enumerate(csv.reader(io.StringIO(text))) if r and not r[0].startswith("#")]
    for i, row in items:
        try:
            t, v = _time(row[0]), float(row[1])
        except (ValueError, TypeError, IndexError) as err:
            if i == 0 and isinstance(row, list):  # a CSV header
                continue
            raise ValueError(f"{source}: entry {i}: {err}") from err
        if not 0 < v <= 2500:
            raise ValueError(f"{source}: entry {i}: {v} gCO2e/kWh is outside (0, 2500]")
        rows.append((t, v))
    if not rows:
        raise ValueError(f"{source}: no data")
    rows.sort()
    return rows


class FileIntensity(IntensityProvider):
    name = "file"

    def __init__(self, zone: str, path: str | Path) -> None:
        self.zone, self.path = zone, Path(path)
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._t0 = 0.0
        self._timeline: PiecewiseConstant | None = None
        self._ok = True
        self._reload()
        if self._timeline is None:
            raise ValueError(f"{self.path}: cannot load the intensity series")

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            points = parse_series(self.path.read_text(), str(self.path))
        except (OSError, ValueError) as err:
            log.error("intensity file %s: %s; keeping the last good series", self.path, err)
            self._ok = False
            return
        t0 = points[0][0]
        times = [t - t0 for t, _ in points]
        dedup = [(t, v) for k, (t, v) in enumerate(zip(times, (v for _, v in points)))
                 if k == 0 or t > times[k - 1]]
        with self._lock:
            self._t0, self._mtime, self._ok = t0, mtime, True
            self._timeline = PiecewiseConstant([t for t, _ in dedup], [v for _, v in dedup])

    def _at(self, t: float) -> Intensity:
        return Intensity(self._timeline.power(t - self._t0), self.zone, "file")

    def current(self, now: float) -> Intensity:
        self._reload()
        return self._at(now)

    def segments(self, t0: float, t1: float) -> list[tuple[float, float, Intensity]]:
        with self._lock:
            base, timeline = self._t0, self._timeline
        edges = [t0, *(b + base for b in timeline.breakpoints(t0 - base, t1 - base)), t1]
        return [(a, b, Intensity(timeline.power(a - base), self.zone, "file")) for a, b in zip(edges, edges[1:])]

    def healthy(self) -> bool:
        return self._ok

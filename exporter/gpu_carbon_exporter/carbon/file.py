"""Intensity from a file: a CSV or JSON time series of (time, gCO2e/kWh), piecewise constant.

CSV: ``time,g_per_kwh`` rows (header optional). JSON: a list of
``{"time": ..., "g_per_kwh": ...}``. Times are unix seconds or ISO 8601. Each
value holds from its time until the next one; the file is re-read when it
changes, so it can replay history or be fed by an offline site's own tooling.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import threading
from pathlib import Path

from ..errors import ConfigError
from ..plugins import register
from .base import Intensity, IntensityProvider
from .timeline import Timeline, intensity_problem, parse_time

log = logging.getLogger(__name__)


def parse_series(text: str, source: str) -> list[tuple[float, float]]:
    """Sorted (unix time, g/kWh) points; raises ValueError naming the source and row."""
    rows: list[tuple[float, float]] = []
    if text.lstrip().startswith("["):
        items = [(i, (o.get("time"), o.get("g_per_kwh"))) for i, o in enumerate(_json_objects(text, source))]
    else:
        items = [(i, r) for i, r in enumerate(csv.reader(io.StringIO(text))) if r and not r[0].startswith("#")]
    for i, row in items:
        try:
            t, v = parse_time(row[0]), float(row[1])
        except (ValueError, TypeError, IndexError) as err:
            if i == 0 and isinstance(row, list):  # a CSV header
                continue
            raise ValueError(f"{source}: entry {i}: {err}") from err
        problem = intensity_problem(v) or (None if v > 0 else "0 gCO2e/kWh: no grid is carbon-free")
        if problem:
            raise ValueError(f"{source}: entry {i}: {problem}")
        rows.append((t, v))
    if not rows:
        raise ValueError(f"{source}: no data")
    rows.sort()
    return rows


def _json_objects(text: str, source: str) -> list[dict]:
    """The JSON form's list of objects; ValueError for anything else (nesting that would overflow
    the parser included), so a bad rewrite keeps the last good series instead of raising."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"{source}: nested too deeply; expected a list of {{time, g_per_kwh}} objects") from None
    bad = next((i for i, o in enumerate(data) if not isinstance(o, dict)), None) if isinstance(data, list) else 0
    if bad is not None:
        raise ValueError(f"{source}: entry {bad}: expected an object with time and g_per_kwh")
    return data


class FileIntensity(IntensityProvider):
    name = "file"

    def __init__(self, zone: str, path: str | Path) -> None:
        self.zone, self.path = zone, Path(path)
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._timeline: Timeline | None = None
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
        dedup = tuple((t, v) for k, (t, v) in enumerate(points) if k == 0 or t > points[k - 1][0])
        with self._lock:
            self._mtime, self._ok = mtime, True
            self._timeline = Timeline(dedup)

    def current(self, now: float) -> Intensity:
        self._reload()
        return Intensity(self._timeline.value_at(now), self.zone, "file")

    def segments(self, t0: float, t1: float) -> list[tuple[float, float, Intensity]]:
        with self._lock:
            timeline = self._timeline
        return [(a, b, Intensity(v, self.zone, "file")) for a, b, v in timeline.segments(t0, t1)]

    def healthy(self) -> bool:
        return self._ok


def _file(zone: str, spec: dict, where: str) -> IntensityProvider:
    try:
        return FileIntensity(zone, spec["path"])
    except ValueError as err:
        raise ConfigError(f"{where}.path: {err}") from err


register("provider", "file", _file, "a CSV or JSON series of (time, gCO2e/kWh), re-read when it changes",
         requires=(("path",),), schema={"path": (str, None, None)})

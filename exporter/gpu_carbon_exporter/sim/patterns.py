"""Power patterns with an exact energy integral.

Every pattern gives the instantaneous power ``power(t)`` in watts and the
cumulative energy ``energy(t)`` in joules from t=0, in closed form, so the
simulator's energy counter and the ground truth are exact integrals.
"""
from __future__ import annotations

import bisect
import csv
import math
import random
from abc import ABC, abstractmethod
from pathlib import Path


class Pattern(ABC):
    @abstractmethod
    def power(self, t: float) -> float:
        """Instantaneous power in W at time t >= 0 (s)."""

    @abstractmethod
    def energy(self, t: float) -> float:
        """Energy in J over [0, t]."""

    def mean_power(self, t0: float, t1: float) -> float:
        """Mean power in W over [t0, t1], clipped at 0."""
        t0 = max(t0, 0.0)
        if t1 <= t0:
            return self.power(max(t1, 0.0))
        return (self.energy(t1) - self.energy(t0)) / (t1 - t0)

    def breakpoints(self, t0: float, t1: float) -> list[float]:
        """Times in (t0, t1) where power changes discontinuously (may be empty)."""
        return []

    @abstractmethod
    def spec(self) -> list[str]:
        """Prefix-notation tokens for the C simulator (tests/nvml_sim), same closed forms."""


class Constant(Pattern):
    def __init__(self, watts: float) -> None:
        self.watts = float(watts)

    def power(self, t: float) -> float:
        return self.watts

    def energy(self, t: float) -> float:
        return self.watts * max(t, 0.0)

    def spec(self) -> list[str]:
        return ["C", repr(self.watts)]


class PiecewiseConstant(Pattern):
    """Power ``values[i]`` from ``times[i]`` to ``times[i+1]``; the last value holds."""

    def __init__(self, times: list[float], values: list[float]) -> None:
        if not times or times[0] != 0 or any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError("step times must start at 0 and increase strictly")
        self.times = [float(t) for t in times]
        self.values = [float(v) for v in values]
        self._cum = [0.0]
        for i in range(1, len(times)):
            self._cum.append(self._cum[-1] + self.values[i - 1] * (self.times[i] - self.times[i - 1]))

    def _seg(self, t: float) -> int:
        return max(bisect.bisect_right(self.times, t) - 1, 0)

    def power(self, t: float) -> float:
        return self.values[self._seg(t)]

    def energy(self, t: float) -> float:
        if t <= 0:
            return 0.0
        i = self._seg(t)
        return self._cum[i] + self.values[i] * (t - self.times[i])

    def breakpoints(self, t0: float, t1: float) -> list[float]:
        lo, hi = bisect.bisect_right(self.times, t0), bisect.bisect_left(self.times, t1)
        return self.times[lo:hi]

    def spec(self) -> list[str]:
        return ["PWC", str(len(self.times)), *(repr(x) for tv in zip(self.times, self.values) for x in tv)]


class PiecewiseLinear(Pattern):
    """Linear interpolation between (time, watts) points; the last value holds."""

    def __init__(self, times: list[float], values: list[float]) -> None:
        if len(times) < 2 or times[0] != 0 or any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError("replay needs >= 2 points, starting at 0, times increasing")
        self.times, self.values = list(times), list(values)
        self._cum = [0.0]
        for i in range(1, len(times)):
            dt = times[i] - times[i - 1]
            self._cum.append(self._cum[-1] + 0.5 * (values[i] + values[i - 1]) * dt)

    def power(self, t: float) -> float:
        i = max(bisect.bisect_right(self.times, t) - 1, 0)
        if i >= len(self.times) - 1:
            return self.values[-1]
        frac = (t - self.times[i]) / (self.times[i + 1] - self.times[i])
        return self.values[i] + frac * (self.values[i + 1] - self.values[i])

    def energy(self, t: float) -> float:
        if t <= 0:
            return 0.0
        i = max(bisect.bisect_right(self.times, t) - 1, 0)
        if i >= len(self.times) - 1:
            return self._cum[-1] + self.values[-1] * (t - self.times[-1])
        return self._cum[i] + 0.5 * (self.values[i] + self.power(t)) * (t - self.times[i])

    def spec(self) -> list[str]:
        return ["PWL", str(len(self.times)),
                *(repr(float(x)) for tv in zip(self.times, self.values) for x in tv)]


class Square(Pattern):
    """``high_w`` for ``duty`` of each period, then ``low_w``; shifted by ``phase_s``."""

    def __init__(self, period_s: float, duty: float, high_w: float, low_w: float,
                 phase_s: float = 0.0) -> None:
        if period_s <= 0 or not 0 <= duty <= 1:
            raise ValueError("period_s must be > 0 and duty in [0, 1]")
        self.period, self.duty, self.high, self.low = period_s, duty, high_w, low_w
        self.phase = phase_s % period_s
        self._per_period = (high_w * duty + low_w * (1 - duty)) * period_s

    def _raw_energy(self, u: float) -> float:
        """Energy over [0, u] of the unshifted wave."""
        n, rem = divmod(u, self.period)
        on = self.duty * self.period
        part = self.high * min(rem, on) + self.low * max(rem - on, 0.0)
        return n * self._per_period + part

    def power(self, t: float) -> float:
        rem = (t + self.phase) % self.period
        return self.high if rem < self.duty * self.period else self.low

    def energy(self, t: float) -> float:
        if t <= 0:
            return 0.0
        return self._raw_energy(t + self.phase) - self._raw_energy(self.phase)

    def spec(self) -> list[str]:
        return ["SQ", *(repr(float(x)) for x in (self.period, self.duty, self.high, self.low, self.phase))]

    def breakpoints(self, t0: float, t1: float) -> list[float]:
        out, on = [], self.duty * self.period
        k = math.floor((t0 + self.phase) / self.period)
        while True:
            base = k * self.period - self.phase
            for edge in (base, base + on):
                if t0 < edge < t1:
                    out.append(edge)
            if base > t1:
                return sorted(out)
            k += 1


class Periodic(Pattern):
    """Repeats ``inner`` over [0, period) forever."""

    def __init__(self, inner: Pattern, period_s: float) -> None:
        self.inner, self.period = inner, period_s
        self._per_period = inner.energy(period_s)

    def power(self, t: float) -> float:
        return self.inner.power(t % self.period)

    def energy(self, t: float) -> float:
        if t <= 0:
            return 0.0
        n, rem = divmod(t, self.period)
        return n * self._per_period + self.inner.energy(rem)

    def spec(self) -> list[str]:
        return ["PER", repr(float(self.period)), *self.inner.spec()]


def bursts(seed: int, low_w: float, high_w: float, mean_on_s: float, mean_off_s: float,
           horizon_s: float = 3600.0) -> Pattern:
    """Seeded random bursts: exponential on/off durations, uniform burst level."""
    rng = random.Random(seed)
    times, values, t, on = [0.0], [float(low_w)], 0.0, False
    while t < horizon_s:
        t += rng.expovariate(1.0 / (mean_on_s if on else mean_off_s))
        on = not on
        times.append(t)
        values.append(rng.uniform((low_w + high_w) / 2, high_w) if on else float(low_w))
    return Periodic(PiecewiseConstant(times[:-1], values[:-1]), times[-1])


def replay_csv(path: Path, loop: bool) -> Pattern:
    """A ``time,watts`` CSV (header optional), times relative to the first row."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                rows.append((float(row[0]), float(row[1])))
            except ValueError:
                if rows:
                    raise
    t0 = rows[0][0]
    pattern = PiecewiseLinear([t - t0 for t, _ in rows], [w for _, w in rows])
    return Periodic(pattern, rows[-1][0] - t0) if loop else pattern


class Schedule(Pattern):
    """Pattern ``parts[i]`` runs from ``starts[i]`` (its own time restarting at 0)."""

    def __init__(self, starts: list[float], parts: list[Pattern]) -> None:
        if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError("segment at_s must start at 0 and increase strictly")
        self.starts, self.parts = starts, parts
        self._cum = [0.0]
        for i in range(1, len(starts)):
            self._cum.append(self._cum[-1] + parts[i - 1].energy(starts[i] - starts[i - 1]))

    def _seg(self, t: float) -> int:
        return max(bisect.bisect_right(self.starts, t) - 1, 0)

    def power(self, t: float) -> float:
        i = self._seg(t)
        return self.parts[i].power(t - self.starts[i])

    def energy(self, t: float) -> float:
        if t <= 0:
            return 0.0
        i = self._seg(t)
        return self._cum[i] + self.parts[i].energy(t - self.starts[i])

    def spec(self) -> list[str]:
        out = ["SCH", str(len(self.starts))]
        for start, part in zip(self.starts, self.parts):
            out += [repr(float(start)), *part.spec()]
        return out

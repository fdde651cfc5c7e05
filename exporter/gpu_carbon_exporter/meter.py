"""The meter: samples sources in the background and keeps exact, monotonic counters.

Scrapes only read ``Meter.snapshot``, an immutable object swapped in after
each full sample, so they never touch hardware and concurrent scrapes cost no
extra NVML calls.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from .carbon.base import Intensity, IntensityProvider
from .sources.base import DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, SourceUnavailable
from .state import StateStore

if TYPE_CHECKING:
    from .attribution.engine import Attribution

log = logging.getLogger(__name__)
JOULES_PER_KWH = 3.6e6
SECONDS_PER_YEAR = 365.25 * 86400


@dataclass(frozen=True)
class Embodied:
    """Embodied carbon of one device, amortised over its lifetime while powered."""

    kg_co2e: float
    lifetime_years: float

    @property
    def grams_per_second(self) -> float:
        return self.kg_co2e * 1000.0 / (self.lifetime_years * SECONDS_PER_YEAR)


@dataclass
class Counters:
    """Monotonic per-device counters (persisted). Energy in J, emissions in g, water in L."""

    energy_j: float = 0.0
    emissions_g: float = 0.0
    embodied_g: float = 0.0
    water_l: float = 0.0
    raw_energy_mj: int | None = None  # last hardware counter value, the baseline for deltas


@dataclass
class _Device:
    source: DeviceSource
    identity: DeviceIdentity
    counters: Counters
    resumed: bool = False  # counters came from a state file: the first delta covers downtime
    up: bool = True
    lost_since: float | None = None
    reading: DeviceReading | None = None
    last_power_w: float | None = None
    last_power_t: float | None = None
    last_sample_t: float | None = None

    @property
    def method(self) -> str:
        return "counter" if self.identity.has_energy_counter else self.identity.method_without_counter


@dataclass(frozen=True)
class DeviceSnapshot:
    identity: DeviceIdentity
    source: str
    up: bool
    method: str
    reading: DeviceReading | None
    counters: Counters
    emission_rate_g_per_s: float | None


@dataclass(frozen=True)
class CollectorStatus:
    success: bool
    duration_s: float
    last_time: float


@dataclass(frozen=True)
class Snapshot:
    time: float
    devices: tuple[DeviceSnapshot, ...] = ()
    intensity: Intensity | None = None
    pue: float = 1.0
    collectors: dict[str, CollectorStatus] = field(default_factory=dict)
    source_info: dict[str, dict[str, str]] = field(default_factory=dict)
    provider_stats: object | None = None  # carbon.live.ProviderStats
    attribution: object | None = None  # attribution.engine.AttributionSnapshot
    forecast: object | None = None  # carbon.live.Forecast


class Meter:
    """Samples every device, integrates energy and carbon, persists counters."""

    def __init__(self, sources: list[DeviceSource], intensity: IntensityProvider, *,
                 pue: float = 1.0, embodied: Embodied | None = None, wue_l_per_kwh: float | None = None,
                 state: StateStore | None = None, clock: Callable[[], float] = time.time,
                 sample_interval_s: float = 1.0, integration_hz: float = 10.0,
                 slow_refresh_s: float = 30.0, persist_interval_s: float = 60.0,
                 lost_retry_s: float = 30.0, attribution: "Attribution | None" = None) -> None:
        self.attribution = attribution
        self.sources, self.intensity, self.pue = sources, intensity, pue
        self.embodied, self.wue, self.state, self.clock = embodied, wue_l_per_kwh, state, clock
        self.sample_interval_s, self.integration_period_s = sample_interval_s, 1.0 / integration_hz
        self.slow_refresh_s, self.persist_interval_s = slow_refresh_s, persist_interval_s
        self.lost_retry_s = lost_retry_s
        self._devices: list[_Device] = []
        self._open_sources: list[DeviceSource] = []
        self._collectors: dict[str, CollectorStatus] = {}
        self._last_slow = -float("inf")
        self._last_persist = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.snapshot = Snapshot(time=clock(), pue=pue)

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        """Open every source; raises SourceUnavailable only when none could open."""
        saved_all = self.state.load() if self.state else {}
        saved = saved_all.get("devices", {})
        if self.attribution is not None:
            self.attribution.restore(saved_all.get("attribution", {}))
        errors = []
        for src in self.sources:
            try:
                identities = src.open()
            except SourceUnavailable as err:
                if src.optional:
                    log.info("%s not detected: %s", src.name, err)
                    continue
                errors.append(str(err))
                self._collectors[src.name] = CollectorStatus(False, 0.0, self.clock())
                continue
            self._open_sources.append(src)
            for ident in identities:
                counters, resumed = self._restore(saved.get(ident.uuid))
                self._devices.append(_Device(src, ident, counters, resumed=resumed))
        if not self._open_sources:
            raise SourceUnavailable("; ".join(errors) or "no source enabled or detected")
        for err in errors:
            log.warning("source unavailable, continuing without it: %s", err)

    @staticmethod
    def _restore(saved: dict | None) -> tuple[Counters, bool]:
        if not saved:
            return Counters(), False
        try:
            return Counters(**{k: saved[k] for k in Counters.__dataclass_fields__ if k in saved}), True
        except TypeError as err:
            log.warning("ignoring malformed saved counters: %s", err)
            return Counters(), False

    def start(self) -> None:
        self.open()
        self.intensity.start()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.persist()
        for src in self._open_sources:
            src.close()
        self.intensity.close()

    def _run(self) -> None:
        needs_integration = any(not d.identity.has_energy_counter and d.identity.fast_integration
                                for d in self._devices)
        next_sample = self.clock() + self.sample_interval_s
        while not self._stop.is_set():
            now = self.clock()
            try:
                if now >= next_sample:
                    next_sample += self.sample_interval_s
                    if next_sample < now:  # fell behind: skip, do not burst
                        next_sample = now + self.sample_interval_s
                    self.sample()
                elif needs_integration:
                    self.integrate()
            except Exception:  # noqa: BLE001 - a bug must not stop the sampler; healthz shows staleness
                log.exception("sampling failed; continuing")
            wait = next_sample - self.clock()
            if needs_integration:
                wait = min(wait, self.integration_period_s)
            self._stop.wait(max(wait, 0.0))

    # -- accounting ------------------------------------------------------------
    def _account(self, dev: _Device, joules: float, t0: float, t1: float) -> None:
        """Add ``joules`` used over [t0, t1] and its emissions at the intensity in force."""
        if joules <= 0:
            return
        c = dev.counters
        c.energy_j += joules
        if not dev.identity.accounted:
            return
        span = t1 - t0
        grams = 0.0
        for a, b, intensity in self.intensity.segments(t0, t1) if span > 0 else \
                [(t0, t1, self.intensity.current(t1))]:
            share = (b - a) / span if span > 0 else 1.0
            grams += joules * share * intensity.g_per_kwh / JOULES_PER_KWH
        c.emissions_g += grams * self.pue
        if self.attribution is not None and dev.identity.kind == "gpu":
            self.attribution.account(dev.identity, joules, grams * self.pue, t0, t1)
        if self.wue is not None:
            c.water_l += joules / JOULES_PER_KWH * self.wue

    def _integrate_point(self, dev: _Device, power_mw: int | None, now: float) -> None:
        """Trapezoid step for devices without an energy counter."""
        if power_mw is None:
            return
        watts = power_mw / 1000.0
        if dev.last_power_t is not None and now > dev.last_power_t:
            self._account(dev, 0.5 * (watts + dev.last_power_w) * (now - dev.last_power_t),
                          dev.last_power_t, now)
        dev.last_power_w, dev.last_power_t = watts, now

    def _counter_delta(self, dev: _Device, raw_mj: int | None, now: float) -> None:
        if raw_mj is None:
            return
        c = dev.counters
        prev = c.raw_energy_mj
        c.raw_energy_mj = raw_mj
        if prev is None:
            return
        if raw_mj < prev:
            log.warning("GPU %s energy counter went from %d to %d mJ: driver reload or reset; "
                        "counting from the new zero", dev.identity.uuid, prev, raw_mj)
            delta_mj = raw_mj
        else:
            delta_mj = raw_mj - prev
        t0 = dev.last_sample_t if dev.last_sample_t is not None else now
        if dev.resumed:
            log.info("GPU %s: %.1f J used while the exporter was down", dev.identity.uuid, delta_mj / 1e3)
            dev.resumed = False
        self._account(dev, delta_mj / 1000.0, t0, now)

    # -- sampling --------------------------------------------------------------
    def integrate(self) -> None:
        """Fast loop: power only, for devices without an energy counter."""
        for dev in self._devices:
            if dev.up and not dev.identity.has_energy_counter and dev.identity.fast_integration:
                now = self.clock()
                try:
                    self._integrate_point(dev, dev.source.read_power_mw(dev.identity), now)
                except DeviceLost as err:
                    self._mark_lost(dev, err, now)

    def _mark_lost(self, dev: _Device, err: Exception, now: float) -> None:
        if dev.up:
            log.error("%s; marking it down, the other devices keep reporting", err)
        dev.up, dev.lost_since = False, now
        dev.last_power_t = None

    def sample(self) -> None:
        """One full sample of every device, then a new snapshot."""
        start = self.clock()
        slow = start - self._last_slow >= self.slow_refresh_s
        if slow:
            self._last_slow = start
        per_source: dict[str, list[bool]] = {}
        took: dict[str, float] = {}
        if self.attribution is not None:
            self.attribution.begin_sample()
        for dev in self._devices:
            t = time.perf_counter()
            per_source.setdefault(dev.source.name, []).append(self._sample_device(dev, slow))
            took[dev.source.name] = took.get(dev.source.name, 0.0) + time.perf_counter() - t
        end = self.clock()
        for name, oks in per_source.items():
            self._collectors[name] = CollectorStatus(any(oks), took[name], end)
        if self.attribution is not None:
            self.attribution.expire(end)
        if self.state and end - self._last_persist >= self.persist_interval_s:
            self.persist()
        self.snapshot = self._build_snapshot(end)

    def _sample_device(self, dev: _Device, slow: bool) -> bool:
        now = self.clock()
        if not dev.up and now - (dev.lost_since or 0) < self.lost_retry_s:
            return False
        try:
            reading = dev.source.read(dev.identity, slow=slow or not dev.up)
        except DeviceLost as err:
            self._mark_lost(dev, err, now)
            return False
        except Exception as err:  # noqa: BLE001 - an unexpected failure degrades this device's sample only
            log.error("%s %s: unexpected error reading it: %r", dev.source.name, dev.identity.uuid, err)
            return False
        if not dev.up:
            log.warning("GPU %s answers again", dev.identity.uuid)
            dev.up = True
        if dev.reading is not None and reading.power_limit_mw is None:
            reading.power_limit_mw = dev.reading.power_limit_mw
        if dev.identity.has_energy_counter:
            self._counter_delta(dev, reading.energy_mj, now)
        else:
            self._integrate_point(dev, reading.power_mw, now)
        if self.attribution is not None and dev.identity.kind == "gpu":
            self.attribution.assign(dev.identity, reading, now)
        if self.embodied is not None and dev.last_sample_t is not None and dev.identity.kind == "gpu":
            dev.counters.embodied_g += self.embodied.grams_per_second * (now - dev.last_sample_t)
        dev.reading, dev.last_sample_t = reading, now
        return True

    def _build_snapshot(self, now: float) -> Snapshot:
        intensity = self.intensity.current(now)
        self._collectors["carbon"] = CollectorStatus(self.intensity.healthy(), 0.0, now)
        devices = []
        for d in self._devices:
            rate = None
            if d.up and d.identity.accounted and d.reading and d.reading.power_mw is not None:
                rate = d.reading.power_mw / 1000.0 * self.pue * intensity.g_per_kwh / JOULES_PER_KWH
            devices.append(DeviceSnapshot(d.identity, d.source.name, d.up, d.method, d.reading,
                                          replace(d.counters), rate))
        return Snapshot(time=now, devices=tuple(devices), intensity=intensity, pue=self.pue,
                        collectors=dict(self._collectors),
                        source_info={s.name: s.info() for s in self._open_sources},
                        provider_stats=self.intensity.stats(), forecast=self.intensity.forecast(now),
                        attribution=self.attribution.snapshot() if self.attribution is not None else None)

    # -- persistence -----------------------------------------------------------
    def persist(self) -> None:
        if not self.state:
            return
        now = self.clock()
        self._last_persist = now
        data = {"saved_at": now, "devices": {
            d.identity.uuid: {k: getattr(d.counters, k) for k in Counters.__dataclass_fields__}
            for d in self._devices}}
        if self.attribution is not None:
            data["attribution"] = self.attribution.state()
        try:
            self.state.save(data)
            self._collectors["state"] = CollectorStatus(True, self.clock() - now, now)
        except OSError as err:
            log.error("could not persist counters to %s: %s", self.state.path, err)
            self._collectors["state"] = CollectorStatus(False, self.clock() - now, now)

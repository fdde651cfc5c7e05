"""The meter: samples sources in the background and keeps exact, monotonic counters.

Scrapes only read ``Meter.snapshot``, an immutable object swapped in after
each full sample, so they never touch hardware and concurrent scrapes cost no
extra NVML calls.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from .carbon.base import Intensity, IntensityProvider
from .kinds import covered_by_node_meter, outside_node
from .sources.base import (JOULES_PER_KWH, MILLI, DeviceIdentity, DeviceLost, DeviceReading, DeviceSource,
                           DeviceStale, SourceUnavailable, kind_label)
from .state import StateStore
from .statecheck import MAX_RAW_MJ, BadEntry, mapping, number

if TYPE_CHECKING:
    from .attribution.engine import Attribution

log = logging.getLogger(__name__)
SECONDS_PER_YEAR = 365.25 * 86400
# Saved counters of a device that did not open are kept this long (s), then forgotten.
ABSENT_DEVICE_EXPIRY_S = 30 * 86400
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def read_boot_id(path: str = BOOT_ID_PATH) -> str | None:
    """The kernel's boot id: a raw hardware counter saved under another boot id is no baseline."""
    try:
        with open(path) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Embodied:
    """Embodied carbon of one device, amortised over its lifetime while powered."""

    kg_co2e_per_device: float
    lifetime_years: float

    @property
    def grams_per_second(self) -> float:
        return self.kg_co2e_per_device * 1000.0 / (self.lifetime_years * SECONDS_PER_YEAR)


@dataclass
class Counters:
    """Monotonic per-device counters (persisted). Energy in J, emissions in g, water in L."""

    energy_j: float = 0.0
    emissions_g: float = 0.0
    embodied_g: float = 0.0
    water_l: float = 0.0
    raw_energy_mj: float | None = None  # last hardware counter value, the baseline for deltas
    rest_energy_j: float = 0.0  # whole-node meters: the part not drawn by accounted GPUs and CPUs

    @classmethod
    def from_saved(cls, entry: dict) -> "Counters":
        """Validated counters from a state entry; raises BadEntry."""
        return cls(energy_j=number(entry, "energy_j"), emissions_g=number(entry, "emissions_g", default=0.0),
                   embodied_g=number(entry, "embodied_g", default=0.0), water_l=number(entry, "water_l", default=0.0),
                   raw_energy_mj=number(entry, "raw_energy_mj", optional=True, hi=MAX_RAW_MJ),
                   rest_energy_j=number(entry, "rest_energy_j", default=0.0))


@dataclass
class _Device:
    source: DeviceSource
    identity: DeviceIdentity
    counters: Counters
    # Wall time the restored counters were saved: the first delta covers [then, now].
    resumed_at: float | None = None
    boot_changed: bool = False  # saved under another boot: the raw baseline is not comparable
    up: bool = True
    lost_since: float | None = None
    reading: DeviceReading | None = None
    last_power_w: float | None = None
    last_power_t: float | None = None
    last_sample_t: float | None = None

    @property
    def method(self) -> str:
        return self.identity.counter_method if self.identity.has_energy_counter else self.identity.method_without_counter


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
    last_time: float  # monotonic clock


@dataclass(frozen=True)
class Snapshot:
    time: float  # wall clock (unix time) of the sample
    devices: tuple[DeviceSnapshot, ...] = ()
    intensity: Intensity | None = None
    pue: float = 1.0
    collectors: dict[str, CollectorStatus] = field(default_factory=dict)
    source_info: dict[str, dict[str, str]] = field(default_factory=dict)
    provider_stats: object | None = None  # carbon.live.ProviderStats
    attribution: object | None = None  # attribution.engine.AttributionSnapshot
    forecast: object | None = None  # carbon.live.Forecast
    mono: float = 0.0  # monotonic clock of the sample, for staleness
    state_discarded: int = 0  # damaged saved entries set aside at start-up
    provider_up: tuple[str, bool] | None = None  # the intensity provider's name and health (not a device collector)
    # Failed writes of the counters since start, by file: "checkpoint" (counters held meanwhile), "durable".
    state_write_failures: dict[str, int] = field(default_factory=lambda: {"checkpoint": 0, "durable": 0})


class Meter:
    """Samples every device, integrates energy and carbon, persists counters.

    Durations (integration, embodied accrual, scheduling, staleness) use ``clock``, a
    monotonic clock; ``wall`` (unix time) is used only to look up intensity and to persist,
    so a step of the system clock neither adds energy nor stops sampling.
    """

    def __init__(self, sources: list[DeviceSource], intensity: IntensityProvider, *,
                 pue: float = 1.0, embodied: Embodied | None = None, wue_liters_per_kwh: float | None = None,
                 state: StateStore | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] | None = None, boot_id: Callable[[], str | None] = read_boot_id,
                 interval_seconds: float = 1.0, integration_hz: float = 10.0,
                 slow_refresh_seconds: float = 30.0, persist_interval_seconds: float = 60.0,
                 lost_device_retry_seconds: float = 30.0, attribution: "Attribution | None" = None) -> None:
        self.attribution = attribution
        self.sources, self.intensity, self.pue = sources, intensity, pue
        self.embodied, self.wue, self.state, self.clock = embodied, wue_liters_per_kwh, state, clock
        # A test clock given alone serves as both clocks.
        self.wall = wall or (time.time if clock is time.monotonic else clock)
        self.boot_id = boot_id()
        self.interval_seconds, self.integration_period_s = interval_seconds, 1.0 / integration_hz
        self.slow_refresh_seconds, self.persist_interval_seconds = slow_refresh_seconds, persist_interval_seconds
        self.lost_device_retry_seconds = lost_device_retry_seconds
        self._devices: list[_Device] = []
        self._absent: dict[str, dict] = {}  # saved entries of devices that did not open, carried forward
        self._open_sources: list[DeviceSource] = []
        self._collectors: dict[str, CollectorStatus] = {}
        self._discarded = 0
        self._durable_ok = True  # the last durable write succeeded (the state collector's health)
        self._write_failures = {"checkpoint": 0, "durable": 0}
        # The counters as last saved: while saving fails, these are exposed (see _held).
        self._saved_counters: dict[str, Counters] = {}
        self._saved_attribution: object | None = None
        self._parts_since_node = 0.0  # J of accounted GPUs/CPUs since the node's last accounting
        self._last_slow = -float("inf")
        self._last_persist = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.snapshot = Snapshot(time=self.wall(), pue=pue, mono=clock())

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        """Open every source; raises SourceUnavailable only when none could open."""
        saved_all = self._load_state()
        saved, saved_at = saved_all.get("devices", {}), saved_all.get("saved_at")
        boot_changed = saved_all.get("boot_id") not in (None, self.boot_id) and self.boot_id is not None
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
                counters, last_seen = saved.pop(ident.uuid, (None, None))
                dev = _Device(src, ident, counters or Counters())
                if counters is not None:  # downtime from when this device was last seen (it may have been absent)
                    dev.resumed_at = min(last_seen, saved_at or float("inf"))
                    dev.boot_changed = boot_changed
                self._devices.append(dev)
        self._carry_absent(saved)
        self._mark_node_devices()
        if not self._open_sources:
            raise SourceUnavailable("; ".join(errors) or "no source enabled or detected")
        for err in errors:
            log.warning("source unavailable, continuing without it: %s", err)
        self._saved_counters = {d.identity.uuid: replace(d.counters) for d in self._devices}
        if self.attribution is not None:
            self._saved_attribution = self.attribution.snapshot()
        if self.state:
            self.state.prepare(self._state_data())  # StateError: not even the checkpoints' space can be had

    def _load_state(self) -> dict:
        """Saved state with every entry validated; damaged entries are set aside and counted."""
        if not self.state:
            return {}
        data = self.state.load()
        self._discarded = self.state.damaged_files  # a whole damaged file counts as one entry
        if not data:
            return {}
        problems: list[str] = []
        out: dict = {"saved_at": _saved_time(data.get("saved_at"), self.wall()),
                     "boot_id": data.get("boot_id") if isinstance(data.get("boot_id"), str) else None,
                     "devices": {}}
        raw_devices = data.get("devices", {})
        if not isinstance(raw_devices, dict):
            problems.append("devices: not a mapping")
            raw_devices = {}
        for uuid, entry in raw_devices.items():
            try:
                entry = mapping(entry, uuid)
                seen = number(entry, "last_seen", optional=True, hi=4e9) or out["saved_at"] or self.wall()
                out["devices"][uuid] = (Counters.from_saved(entry), min(seen, self.wall()))
            except BadEntry as err:
                problems.append(f"device {uuid}: {err}")
        if self.attribution is not None:
            problems += self.attribution.restore(data.get("attribution", {}), self.clock(), self.wall())
        if problems:
            self._discarded += len(problems)
            aside = self.state.set_aside(json.dumps(data, default=str).encode(), "damaged entries")
            for p in problems:
                log.error("saved state: %s; entry set aside (a copy of the whole state is in %s)", p, aside)
        return out

    def _carry_absent(self, unopened: dict[str, tuple[Counters, float]]) -> None:
        """Keep saved devices that did not open now (driver not loaded yet) until they come back."""
        now = self.wall()
        for uuid, (counters, last_seen) in unopened.items():
            if now - last_seen > ABSENT_DEVICE_EXPIRY_S:
                log.info("forgetting saved counters of %s, not seen for over %d days", uuid,
                         ABSENT_DEVICE_EXPIRY_S // 86400)
            else:
                log.info("%s did not open; its saved counters are kept until it is back", uuid)
                self._absent[uuid] = {**vars(counters), "last_seen": last_seen}

    def _mark_node_devices(self) -> None:
        """Only one whole-node meter accounts emissions: two BMC readings are the same watts. Where
        one is accounted, it measures the disks too: their estimate is exposed, not accounted."""
        nodes = [d for d in self._devices if d.identity.kind == "node" and d.identity.accounted]
        for d in nodes[1:]:
            log.warning("%s: another node power source is accounted already; exposing its energy only",
                        d.identity.uuid)
            d.identity = replace(d.identity, accounted=False)
        for d in self._devices:
            if nodes and covered_by_node_meter(d.identity.kind) and d.identity.accounted:
                log.info("%s: a whole-node meter measures it already; its estimate is exposed, not accounted",
                         d.identity.uuid)
                d.identity = replace(d.identity, accounted=False)

    def start(self, ready_timeout_s: float = 5.0) -> None:
        self.open()
        self.intensity.start()
        if any(d.resumed_at is not None for d in self._devices):
            # the first sample carries the downtime energy: give a live provider a moment to answer first
            self.intensity.wait_ready(ready_timeout_s)
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
        if self.state:
            self.state.close()

    def _next_sample(self, last: float) -> float:
        """Monotonic time of the next sample: the next multiple of the interval on the wall clock.

        The phase then survives a restart: the exposed counters lag the same behind the wall clock
        before and after it, so an increase() whose window spans a restart loses no energy to a
        moved phase. A behind-schedule sampler skips to the next multiple (no burst), a sample
        closer than half an interval to the last is not taken, and a wall-clock step only moves
        the phase: the wait is at most one and a half intervals."""
        now = self.clock()
        at = now + self.interval_seconds - self.wall() % self.interval_seconds
        if at - last < 0.5 * self.interval_seconds:
            at += self.interval_seconds
        return at

    def _run(self) -> None:
        needs_integration = any(not d.identity.has_energy_counter and d.identity.fast_integration
                                for d in self._devices)
        next_sample = self._next_sample(self.clock())
        while not self._stop.is_set():
            now = self.clock()
            try:
                if now >= next_sample:
                    self.sample()
                    next_sample = self._next_sample(now)
                elif needs_integration:
                    self.integrate()
            except Exception:  # noqa: BLE001 - a bug must not stop the sampler; healthz shows staleness
                log.exception("sampling failed; continuing")
            wait = next_sample - self.clock()
            if needs_integration:
                wait = min(wait, self.integration_period_s)
            self._stop.wait(min(max(wait, 0.0), self.interval_seconds))

    # -- accounting ------------------------------------------------------------
    def _account(self, dev: _Device, joules: float, w0: float, w1: float, held_s: float) -> None:
        """Add ``joules`` used over the wall-clock span [w0, w1] and its emissions at the intensity in force.

        ``held_s`` is the sampled (monotonic) part of that span, over which embodied carbon accrues."""
        if joules <= 0:
            return
        c = dev.counters
        c.energy_j += joules
        if not dev.identity.accounted:
            return
        if dev.identity.kind == "node":
            joules = self._node_rest(dev, joules)
        elif not outside_node(dev.identity.kind):
            self._parts_since_node += joules
        grams = self._grams(joules, w0, w1)
        if outside_node(dev.identity.kind):  # not this site's: no PUE, no water
            c.emissions_g += grams
            return
        c.emissions_g += grams * self.pue
        if self.attribution is not None and dev.identity.kind == "gpu":
            self.attribution.account(dev.identity, joules, grams * self.pue, w0, w1, held_s)
        if self.wue is not None:
            c.water_l += joules / JOULES_PER_KWH * self.wue

    def _grams(self, joules: float, w0: float, w1: float) -> float:
        """Emissions (g, before PUE) of ``joules`` spread evenly over [w0, w1]."""
        span = w1 - w0
        if span <= 0:
            return joules * self.intensity.current(w1).g_per_kwh / JOULES_PER_KWH
        return sum(joules * (b - a) / span * i.g_per_kwh / JOULES_PER_KWH
                   for a, b, i in self.intensity.segments(w0, w1))

    def _node_rest(self, dev: _Device, joules: float) -> float:
        """The part of a whole-node reading not already counted by its GPUs and CPUs (never negative)."""
        rest = max(joules - self._parts_since_node, 0.0)
        self._parts_since_node = 0.0
        dev.counters.rest_energy_j += rest
        return rest

    def _span(self, dev: _Device, t0: float | None, now: float, wall_now: float) -> float:
        """Wall-clock start of the interval that ends now: monotonic duration back from the wall clock,
        or the saved time for the first delta after a restart (downtime spread at its own intensities)."""
        if dev.resumed_at is not None:
            start = dev.resumed_at
            dev.resumed_at = None
            if start < wall_now:
                return start
        return wall_now - (now - t0) if t0 is not None else wall_now

    def _integrate_point(self, dev: _Device, power_mw: float | None, now: float, wall_now: float) -> None:
        """Trapezoid step for devices without an energy counter (``now``: monotonic)."""
        if power_mw is None:
            return
        watts = power_mw * MILLI
        if dev.last_power_t is None and dev.identity.kind == "node":
            self._parts_since_node = 0.0  # the node's first point: what the parts used before is not its rest
        if dev.last_power_t is not None and now > dev.last_power_t:
            dt = now - dev.last_power_t
            self._account(dev, 0.5 * (watts + dev.last_power_w) * dt, wall_now - dt, wall_now, dt)
        dev.resumed_at = None
        dev.last_power_w, dev.last_power_t = watts, now

    def _counter_delta(self, dev: _Device, raw_mj: float | None, now: float, wall_now: float) -> None:
        if raw_mj is None:
            return
        c = dev.counters
        prev = c.raw_energy_mj
        c.raw_energy_mj = raw_mj
        if prev is None:
            dev.resumed_at = None
            return
        delta_mj = self._raw_delta(dev, prev, raw_mj)
        w0 = self._span(dev, dev.last_sample_t, now, wall_now)
        if dev.last_sample_t is None and delta_mj > 0:
            log.info("%s: %.1f J used while the exporter was down", _describe(dev), delta_mj * MILLI)
        held = now - dev.last_sample_t if dev.last_sample_t is not None else 0.0
        self._account(dev, delta_mj * MILLI, w0, wall_now, held)

    @staticmethod
    def _raw_delta(dev: _Device, prev: float, raw: float) -> float:
        """mJ between two hardware counter readings: wrap-safe, reload-safe, never negative."""
        wrap = dev.identity.energy_wrap_mj
        if dev.boot_changed:
            dev.boot_changed = False
            if wrap is not None:
                log.info("%s: the node rebooted while the exporter was down; a wrapping counter cannot "
                         "tell what was used then, counting from now", _describe(dev))
                return 0.0
            return raw  # the counter restarted with the driver after boot: all of it is downtime energy
        if raw >= prev:
            return raw - prev
        if wrap is not None:
            return raw + wrap - prev
        log.warning("%s energy counter went from %d to %d mJ: driver reload or reset; counting from the "
                    "new zero", _describe(dev), prev, raw)
        return raw

    # -- sampling --------------------------------------------------------------
    def integrate(self) -> None:
        """Fast loop: power only, for devices without an energy counter."""
        for dev in self._devices:
            if dev.up and not dev.identity.has_energy_counter and dev.identity.fast_integration:
                now = self.clock()
                try:
                    self._integrate_point(dev, dev.source.read_power_mw(dev.identity), now, self.wall())
                except DeviceLost as err:
                    self._mark_lost(dev, err, now)
                except Exception as err:  # noqa: BLE001 - one device's bug must not stop the others
                    log.error("%s: unexpected error reading power: %r", _describe(dev), err)

    def _mark_lost(self, dev: _Device, err: Exception, now: float) -> None:
        if dev.up:
            log.error("%s; marking it down, the other devices keep reporting", err)
        dev.up, dev.lost_since = False, now
        dev.last_power_t = None
        if self.attribution is not None:
            self.attribution.forget_holders(dev.identity.uuid)

    def sample(self) -> None:
        """One full sample of every device, a crash checkpoint, then a new snapshot."""
        start = self.clock()
        slow = start - self._last_slow >= self.slow_refresh_seconds
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
            self.attribution.read_work(end)
            self.attribution.expire(end)
        saved = not self.state or (end - self._last_persist >= self.persist_interval_seconds and self.persist())
        saved = saved or self._checkpoint()
        snap = self._build_snapshot(end)
        if saved:
            self._saved_counters = {d.identity.uuid: d.counters for d in snap.devices}
            self._saved_attribution = snap.attribution
            self.snapshot = snap
        else:
            self.snapshot = self._held(snap)

    def _held(self, snap: Snapshot) -> Snapshot:
        """The new sample with its counters held at the last saved values: the counters could not be
        saved, and no exposed value may exceed what a restart reads back. Gauges stay live."""
        devices = tuple(replace(d, counters=self._saved_counters.get(d.identity.uuid, Counters()))
                        for d in snap.devices)
        return replace(snap, devices=devices, attribution=self._saved_attribution)

    def _sample_device(self, dev: _Device, slow: bool) -> bool:
        now = self.clock()
        if not dev.up and now - (dev.lost_since or 0) < self.lost_device_retry_seconds:
            return False
        try:
            reading = dev.source.read(dev.identity, slow=slow or not dev.up)
        except DeviceLost as err:
            self._mark_lost(dev, err, now)
            return False
        except DeviceStale as err:  # a polled source with no fresh value: asked again next sample
            if dev.up:
                log.warning("%s; showing it down until a fresh reading arrives", err)
            dev.up, dev.lost_since = False, None
            return False
        except Exception as err:  # noqa: BLE001 - an unexpected failure degrades this device's sample only
            log.error("%s %s: unexpected error reading it: %r", dev.source.name, dev.identity.uuid, err)
            return False
        if not dev.up:
            log.warning("%s answers again", _describe(dev))
            dev.up = True
        try:
            self._use_reading(dev, reading, now, slow)
        except Exception:  # noqa: BLE001 - a bug in one device's accounting must not stop the others
            log.exception("%s: accounting this sample failed; the other devices go on", _describe(dev))
            dev.reading, dev.last_sample_t = reading, now
            return False
        return True

    def _use_reading(self, dev: _Device, reading: DeviceReading, now: float, slow: bool) -> None:
        wall_now = self.wall()
        if dev.reading is not None and reading.power_limit_mw is None:
            reading.power_limit_mw = dev.reading.power_limit_mw
        if dev.identity.has_energy_counter:
            self._counter_delta(dev, reading.energy_mj, now, wall_now)
        else:
            self._integrate_point(dev, _integrated_power(dev, reading), now, wall_now)
        if self.attribution is not None and dev.identity.kind == "gpu":
            self.attribution.assign(dev.identity, reading, now)
        if self.embodied is not None and dev.last_sample_t is not None and dev.identity.kind == "gpu":
            dev.counters.embodied_g += self.embodied.grams_per_second * (now - dev.last_sample_t)
        dev.reading, dev.last_sample_t = reading, now

    def _build_snapshot(self, now: float) -> Snapshot:
        wall_now = self.wall()
        intensity = self.intensity.current(wall_now)
        devices = []
        for d in self._devices:
            rate = None
            if d.up and d.identity.accounted and d.reading and d.reading.power_mw is not None:
                rate = d.reading.power_mw * MILLI * self.pue * intensity.g_per_kwh / JOULES_PER_KWH
            devices.append(DeviceSnapshot(d.identity, d.source.name, d.up, d.method, d.reading,
                                          replace(d.counters), rate))
        return Snapshot(time=wall_now, mono=now, devices=tuple(devices), intensity=intensity, pue=self.pue,
                        collectors=dict(self._collectors), state_discarded=self._discarded,
                        state_write_failures=dict(self._write_failures),
                        source_info={s.name: s.info() for s in self._open_sources},
                        provider_stats=self.intensity.stats(), forecast=self.intensity.forecast(wall_now),
                        provider_up=(self.intensity.name, self.intensity.healthy()),
                        attribution=self.attribution.snapshot() if self.attribution is not None else None)

    # -- persistence -----------------------------------------------------------
    def _state_data(self) -> dict:
        wall_now = self.wall()
        devices = dict(self._absent)
        for d in self._devices:
            devices[d.identity.uuid] = {**{k: getattr(d.counters, k) for k in Counters.__dataclass_fields__},
                                        "last_seen": wall_now}
        data = {"saved_at": wall_now, "boot_id": self.boot_id, "devices": devices}
        if self.attribution is not None:
            data["attribution"] = self.attribution.state(self.clock(), wall_now)
        return data

    def _checkpoint(self) -> bool:
        """Crash checkpoint before the sample is exposed: no exposed value is ever above the saved one."""
        t = self.clock()
        try:
            self.state.checkpoint(self._state_data())
            self._collectors["state"] = CollectorStatus(self._durable_ok, self.clock() - t, t)
            return True
        except (OSError, ValueError) as err:
            self._write_failures["checkpoint"] += 1
            log.error("could not write the crash checkpoint beside %s: %s; the exposed counters stay at "
                      "their last saved values until it succeeds", self.state.path, err)
            self._collectors["state"] = CollectorStatus(False, self.clock() - t, t)
            return False

    def persist(self) -> bool:
        """Durable write of the counters; False (logged, health metric) when it failed."""
        if not self.state:
            return False
        now = self.clock()
        self._last_persist = now
        try:
            self.state.save(self._state_data())
            self._collectors["state"] = CollectorStatus(True, self.clock() - now, now)
            self._durable_ok = True
            return True
        except (OSError, ValueError) as err:
            log.error("could not persist counters to %s: %s", self.state.path, err)
            self._write_failures["durable"] += 1
            self._collectors["state"] = CollectorStatus(False, self.clock() - now, now)
            self._durable_ok = False
            return False


def _integrated_power(dev: _Device, reading: DeviceReading) -> float | None:
    """The power to integrate: the 1-s average field where the device integrates it, else the gauge."""
    if dev.identity.method_without_counter == "integrated_average" and reading.power_average_mw is not None:
        return reading.power_average_mw
    return reading.power_mw


def _describe(dev: _Device) -> str:
    return f"{dev.source.noun or kind_label(dev.identity.kind)} {dev.identity.uuid}"




def _saved_time(value: object, now: float) -> float | None:
    """A saved wall time, if plausible (not in the future, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value <= now + 60 else None

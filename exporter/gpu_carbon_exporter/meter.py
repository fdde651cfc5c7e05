"""The meter: samples sources in the background and keeps exact, monotonic counters.

Scrapes only read ``Meter.snapshot``, an immutable object swapped in after
each full sample, so they never touch hardware and concurrent scrapes cost no
extra NVML calls.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from .accounting.devices import Device, Embodied, Ledger, mark_node_devices, node_rest_power
from .accounting.jobs import add_water
from .carbon.base import IntensityProvider
from .persistence import Persistence, read_boot_id
from .snapshot import AttributionSnapshot, CollectorStatus, Counters, DeviceSnapshot, Snapshot, shallow_copy
from .sources.base import DeviceLost, DeviceReading, DeviceSource, DeviceStale, SharedReader, SourceUnavailable
from .state import StateStore

if TYPE_CHECKING:
    from .attribution.engine import Attribution

# The names the meter's users have always imported from here.
__all__ = ["CollectorStatus", "Counters", "DeviceSnapshot", "Embodied", "Meter", "Snapshot", "read_boot_id"]
log = logging.getLogger(__name__)
# /healthz: the sampler is stale when its last sample is older than this many intervals (at least STALE_MIN_S).
STALE_INTERVALS = 3
STALE_MIN_S = 5.0


class Meter:
    """Samples every device on a schedule and swaps in a new snapshot after each full sample.

    What it samples is accounted by ``accounting`` (a ``Ledger`` for the devices, the attribution
    engine's split for the jobs) and saved by ``persistence``; the meter schedules, reads and
    assembles. Durations (integration, embodied accrual, scheduling, staleness) use ``clock``, a
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
        self.sources, self.intensity, self.state, self.clock = sources, intensity, state, clock
        # A test clock given alone serves as both clocks.
        self.wall = wall or (time.time if clock is time.monotonic else clock)
        self.boot_id = boot_id()
        self.interval_seconds, self.integration_period_s = interval_seconds, 1.0 / integration_hz
        self.slow_refresh_seconds, self.persist_interval_seconds = slow_refresh_seconds, persist_interval_seconds
        self.lost_device_retry_seconds = lost_device_retry_seconds
        self._devices: list[Device] = []
        self._open_sources: list[DeviceSource] = []
        self._readers: list[SharedReader] = []  # what the open sources share, each once (set by open)
        self._collectors: dict[str, CollectorStatus] = {}
        self.ledger = Ledger(intensity, pue=pue, embodied=embodied, wue_liters_per_kwh=wue_liters_per_kwh,
                             attribution=attribution)
        self.persistence = Persistence(state, self._collectors, clock=clock, wall=self.wall, boot_id=self.boot_id,
                                       persist_interval_seconds=persist_interval_seconds, attribution=attribution)
        self._last_slow = -float("inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.snapshot = Snapshot(time=self.wall(), pue=pue, wue_liters_per_kwh=wue_liters_per_kwh, mono=clock())

    # The accounting's settings, read and set here (tests set them after construction).
    @property
    def pue(self) -> float:
        return self.ledger.pue

    @pue.setter
    def pue(self, value: float) -> None:
        self.ledger.pue = value

    @property
    def wue(self) -> float | None:
        return self.ledger.wue

    @wue.setter
    def wue(self, value: float | None) -> None:
        self.ledger.wue = value

    @property
    def embodied(self) -> Embodied | None:
        return self.ledger.embodied

    @embodied.setter
    def embodied(self, value: Embodied | None) -> None:
        self.ledger.embodied = value

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        """Open every source; raises SourceUnavailable only when none could open."""
        saved_all = self.persistence.load()
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
                dev = Device(src, ident, counters or Counters())
                if counters is not None:  # downtime from when this device was last seen (it may have been absent)
                    dev.resumed_at = min(last_seen, saved_at or float("inf"))
                    dev.boot_changed = boot_changed
                self._devices.append(dev)
        self.persistence.carry_absent(saved)
        mark_node_devices(self._devices)
        if not self._open_sources:
            raise SourceUnavailable("; ".join(errors) or "no source enabled or detected")
        self._readers = self._shared_readers()
        for err in errors:
            log.warning("source unavailable, continuing without it: %s", err)
        # StateError: not even the checkpoints' space can be had
        self.persistence.prepare(self._devices, self._attribution_snapshot())

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
            except Exception:  # a bug must not stop the sampler; healthz shows staleness
                log.exception("sampling failed; continuing")
            wait = next_sample - self.clock()
            if needs_integration:
                wait = min(wait, self.integration_period_s)
            self._stop.wait(min(max(wait, 0.0), self.interval_seconds))

    def health(self) -> tuple[bool, str]:
        """/healthz: ok while the last sample is fresh (a stuck sampler shows as stale)."""
        age = self.clock() - self.snapshot.mono
        ok = age < max(STALE_INTERVALS * self.interval_seconds, STALE_MIN_S)
        return ok, "ok" if ok else f"stale: last sample {age:.1f}s ago"

    # -- sampling --------------------------------------------------------------
    def integrate(self) -> None:
        """Fast loop: power only, for devices without an energy counter."""
        for dev in self._devices:
            if dev.up and not dev.identity.has_energy_counter and dev.identity.fast_integration:
                now = self.clock()
                try:
                    self.ledger.integrate_point(dev, dev.source.read_power_mw(dev.identity), now, self.wall())
                except DeviceLost as err:
                    self._mark_lost(dev, err, now)
                except Exception as err:  # noqa: BLE001 - one device's bug must not stop the others
                    log.error("%s: unexpected error reading power: %r", dev.describe(), err)

    def _mark_lost(self, dev: Device, err: Exception, now: float) -> None:
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
        for reader in self._readers:  # read while the devices were: no run, no new status (its age grows)
            run = reader.take_run()
            if run is not None:
                self._collectors[reader.name] = CollectorStatus(run.success, run.duration_s, end)
        if self.attribution is not None:
            self.attribution.read_work(end)
            self.attribution.expire(end)
        saved = self.persistence.save_sample(self._devices, end)
        self.snapshot = self.persistence.expose(self._build_snapshot(end), saved)

    def _shared_readers(self) -> list[SharedReader]:
        """The readers the open sources share (one DRM client scanner for the AMD and Intel sources), once each."""
        readers: dict[int, SharedReader] = {}
        for src in self._open_sources:
            for reader in src.shared_readers():
                readers.setdefault(id(reader), reader)
        return list(readers.values())

    def _sample_device(self, dev: Device, slow: bool) -> bool:
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
            log.warning("%s answers again", dev.describe())
            dev.up = True
        try:
            self._use_reading(dev, reading, now)
        except Exception:  # a bug in one device's accounting must not stop the others
            log.exception("%s: accounting this sample failed; the other devices go on", dev.describe())
            dev.reading, dev.last_sample_t = reading, now
            return False
        return True

    def _use_reading(self, dev: Device, reading: DeviceReading, now: float) -> None:
        if dev.reading is not None and reading.power_limit_mw is None:
            reading.power_limit_mw = dev.reading.power_limit_mw  # read on slow samples only
        self.ledger.add_energy(dev, reading, now, self.wall())
        if self.attribution is not None and dev.identity.kind == "gpu":
            self.attribution.assign(dev.identity, reading, now)
        self.ledger.add_embodied(dev, now)
        dev.reading, dev.last_sample_t = reading, now

    def _build_snapshot(self, now: float) -> Snapshot:
        wall_now = self.wall()
        intensity = self.intensity.current(wall_now)
        devices = tuple(DeviceSnapshot(d.identity, d.source.name, d.up, d.method, d.reading, shallow_copy(d.counters),
                                       self.ledger.emission_rate(d, intensity)) for d in self._devices)
        attribution = self._attribution_snapshot()
        p = self.persistence
        return Snapshot(time=wall_now, mono=now, devices=devices, intensity=intensity, pue=self.pue,
                        wue_liters_per_kwh=self.wue,
                        collectors=dict(self._collectors), state_discarded=p.discarded,
                        state_write_failures=dict(p.write_failures),
                        source_info={s.name: s.info() for s in self._open_sources},
                        provider_stats=self.intensity.stats(), forecast=self.intensity.forecast(wall_now),
                        provider_up=(self.intensity.name, self.intensity.healthy()),
                        attribution=attribution, node_rest_power=node_rest_power(devices))

    def _attribution_snapshot(self) -> AttributionSnapshot | None:
        if self.attribution is None:
            return None
        att = self.attribution.snapshot()
        add_water(att, self.wue)
        return att

    def persist(self) -> bool:
        """Durable write of the counters; False (logged, health metric) when it failed."""
        return self.persistence.persist(self._devices)

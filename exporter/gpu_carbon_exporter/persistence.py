"""The meter's counters saved and restored through ``state.StateStore``.

At start-up the saved state is read with every entry validated (a damaged one is set aside and
counted, never fatal); devices that did not open keep their saved counters until they are back.
After every sample a crash checkpoint is written before the sample is exposed, and a durable
write every ``persist_interval_seconds``: while saving fails, scrapes see the counters as last
saved (``held``), so no exposed value is ever above what a restart reads back.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from .snapshot import AttributionSnapshot, CollectorStatus, Counters, Snapshot
from .state import StateStore
from .statecheck import MAX_RAW_MJ, BadEntry, mapping, number

if TYPE_CHECKING:
    from .accounting.devices import Device
    from .attribution.engine import Attribution

log = logging.getLogger(__name__)
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


def counters_from_saved(entry: dict) -> Counters:
    """Validated counters from a state entry; raises BadEntry."""
    return Counters(energy_j=number(entry, "energy_j"), emissions_g=number(entry, "emissions_g", default=0.0),
                    embodied_g=number(entry, "embodied_g", default=0.0), water_l=number(entry, "water_l", default=0.0),
                    raw_energy_mj=number(entry, "raw_energy_mj", optional=True, hi=MAX_RAW_MJ),
                    rest_energy_j=number(entry, "rest_energy_j", default=0.0))


class Persistence:
    """Loads and saves the counters of the meter's devices and of its attribution engine.

    ``collectors`` is the meter's table of collector statuses: the ``state`` collector's
    health is written there after every write."""

    def __init__(self, state: StateStore | None, collectors: dict[str, CollectorStatus], *,
                 clock: Callable[[], float], wall: Callable[[], float], boot_id: str | None,
                 persist_interval_seconds: float, attribution: Attribution | None = None) -> None:
        self.state, self.collectors, self.clock, self.wall = state, collectors, clock, wall
        self.boot_id, self.attribution = boot_id, attribution
        self.persist_interval_seconds = persist_interval_seconds
        self.discarded = 0
        self.durable_ok = True  # the last durable write succeeded (the state collector's health)
        self.write_failures = {"checkpoint": 0, "durable": 0}
        self._absent: dict[str, dict] = {}  # saved entries of devices that did not open, carried forward
        # The counters as last saved: while saving fails, these are exposed (see held).
        self._saved_counters: dict[str, Counters] = {}
        self._saved_attribution: AttributionSnapshot | None = None
        self._last_persist = clock()

    # -- start-up --------------------------------------------------------------
    def load(self) -> dict:
        """Saved state with every entry validated; damaged entries are set aside and counted."""
        if not self.state:
            return {}
        data = self.state.load()
        self.discarded = self.state.damaged_files  # a whole damaged file counts as one entry
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
                out["devices"][uuid] = (counters_from_saved(entry), min(seen, self.wall()))
            except BadEntry as err:
                problems.append(f"device {uuid}: {err}")
        if self.attribution is not None:
            problems += self.attribution.restore(data.get("attribution", {}), self.clock(), self.wall())
        if problems:
            self.discarded += len(problems)
            aside = self.state.set_aside(json.dumps(data, default=str).encode(), "damaged entries")
            for p in problems:
                log.error("saved state: %s; entry set aside (a copy of the whole state is in %s)", p, aside)
        return out

    def carry_absent(self, unopened: dict[str, tuple[Counters, float]]) -> None:
        """Keep saved devices that did not open now (driver not loaded yet) until they come back."""
        now = self.wall()
        for uuid, (counters, last_seen) in unopened.items():
            if now - last_seen > ABSENT_DEVICE_EXPIRY_S:
                log.info("forgetting saved counters of %s, not seen for over %d days", uuid,
                         ABSENT_DEVICE_EXPIRY_S // 86400)
            else:
                log.info("%s did not open; its saved counters are kept until it is back", uuid)
                self._absent[uuid] = {**vars(counters), "last_seen": last_seen}

    def prepare(self, devices: list[Device], attribution: AttributionSnapshot | None) -> None:
        """Remember the restored counters (and the jobs', ``attribution``) as saved, and reserve the
        checkpoints' space. Raises StateError when not even that can be had."""
        self._saved_counters = {d.identity.uuid: replace(d.counters) for d in devices}
        self._saved_attribution = attribution
        if self.state:
            self.state.prepare(self.state_data(devices))

    # -- after each sample ------------------------------------------------------
    def save_sample(self, devices: list[Device], end: float) -> bool:
        """The durable write when it is due, else the crash checkpoint; True when the counters are saved."""
        saved = not self.state or (end - self._last_persist >= self.persist_interval_seconds and self.persist(devices))
        return saved or self._checkpoint(devices)

    def expose(self, snap: Snapshot, saved: bool) -> Snapshot:
        """The snapshot to expose: as built when its counters were saved, else held at the last saved."""
        if saved:
            self._saved_counters = {d.identity.uuid: d.counters for d in snap.devices}
            self._saved_attribution = snap.attribution
            return snap
        return self._held(snap)

    def _held(self, snap: Snapshot) -> Snapshot:
        """The new sample with its counters held at the last saved values: the counters could not be
        saved, and no exposed value may exceed what a restart reads back. Gauges stay live."""
        devices = tuple(replace(d, counters=self._saved_counters.get(d.identity.uuid, Counters()))
                        for d in snap.devices)
        return replace(snap, devices=devices, attribution=self._saved_attribution)

    # -- writes -------------------------------------------------------------------
    def state_data(self, devices: list[Device]) -> dict:
        wall_now = self.wall()
        saved = dict(self._absent)
        for d in devices:  # written after every sample: the counters' own fields, in order, without getattr
            saved[d.identity.uuid] = {**vars(d.counters), "last_seen": wall_now}
        data = {"saved_at": wall_now, "boot_id": self.boot_id, "devices": saved}
        if self.attribution is not None:
            data["attribution"] = self.attribution.state(self.clock(), wall_now)
        return data

    def _checkpoint(self, devices: list[Device]) -> bool:
        """Crash checkpoint before the sample is exposed: no exposed value is ever above the saved one."""
        t = self.clock()
        try:
            self.state.checkpoint(self.state_data(devices))
            self.collectors["state"] = CollectorStatus(self.durable_ok, self.clock() - t, t)
            return True
        except (OSError, ValueError) as err:
            self.write_failures["checkpoint"] += 1
            log.error("could not write the crash checkpoint beside %s: %s; the exposed counters stay at "
                      "their last saved values until it succeeds", self.state.path, err)
            self.collectors["state"] = CollectorStatus(False, self.clock() - t, t)
            return False

    def persist(self, devices: list[Device]) -> bool:
        """Durable write of the counters; False (logged, health metric) when it failed."""
        if not self.state:
            return False
        now = self.clock()
        self._last_persist = now
        try:
            self.state.save(self.state_data(devices))
            self.collectors["state"] = CollectorStatus(True, self.clock() - now, now)
            self.durable_ok = True
            return True
        except (OSError, ValueError) as err:
            log.error("could not persist counters to %s: %s", self.state.path, err)
            self.write_failures["durable"] += 1
            self.collectors["state"] = CollectorStatus(False, self.clock() - now, now)
            self.durable_ok = False
            return False


def _saved_time(value: object, now: float) -> float | None:
    """A saved wall time, if plausible (not in the future, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value <= now + 60 else None

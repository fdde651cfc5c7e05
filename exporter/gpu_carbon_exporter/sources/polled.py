"""Network-backed sources (Redfish, IPMI) read on their own thread, never on the sampler's.

A BMC can take seconds to answer. ``PolledSource`` reads the wrapped source every
``poll_interval_seconds`` in a thread of its own; the meter's reads return the latest reading at
once, so a slow BMC delays nothing else. A reading older than ``max_age_seconds`` is not served:
the device shows as down (its collector fails) until a fresh one arrives, and is asked
again at every sample; the energy across the gap is bridged by the trapezoid.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Callable

from .base import DeviceIdentity, DeviceReading, DeviceSource, DeviceStale

log = logging.getLogger(__name__)


class PolledSource(DeviceSource):
    def __init__(self, inner: DeviceSource, poll_interval_seconds: float, max_age_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner, self.poll_interval_seconds, self.max_age_seconds, self.clock = \
            inner, poll_interval_seconds, max_age_seconds, clock
        self.name, self.optional, self.noun = inner.name, inner.optional, inner.noun
        self._devices: list[DeviceIdentity] = []
        self._latest: dict[str, tuple[DeviceReading, float]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> list[DeviceIdentity]:
        self._devices = self.inner.open()
        self._poll_once()  # a first value before the first sample (opening talked to the BMC already)
        self._thread = threading.Thread(target=self._run, name=f"poll-{self.name}", daemon=True)
        self._thread.start()
        return self._devices

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval_seconds):
            self._poll_once()

    def _poll_once(self) -> None:
        for device in self._devices:
            try:
                reading = self.inner.read(device, slow=True)
            except Exception as err:  # noqa: BLE001 - DeviceLost or a bug: this source only, logged once
                with self._lock:
                    first = device.uuid not in self._errors
                    self._errors[device.uuid] = str(err)
                (log.error if first else log.debug)("%s: %s", self.name, err)
                continue
            with self._lock:
                self._latest[device.uuid] = (reading, self.clock())
                if self._errors.pop(device.uuid, None) is not None:
                    log.info("%s %s answers again", self.name, device.uuid)

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        with self._lock:
            latest, error = self._latest.get(device.uuid), self._errors.get(device.uuid)
        age = None if latest is None else self.clock() - latest[1]
        if latest is None or age > self.max_age_seconds:
            since = "yet" if latest is None else f"for {age:.0f}s"
            raise DeviceStale(f"{self.name} {device.uuid}: no fresh reading {since}"
                             + (f" (last error: {error})" if error else ""))
        return replace(latest[0], errors=list(latest[0].errors))

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        return self.read(device, slow=False).power_mw

    def info(self) -> dict[str, str]:
        return self.inner.info()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)  # a read still blocked on the BMC ends at its own timeout
        self.inner.close()


def polled(source: DeviceSource, section: dict) -> DeviceSource:
    """A network-backed source on its own thread: a reading is served for two polls plus one timeout."""
    interval = section["poll_interval_seconds"]
    return PolledSource(source, interval, 2 * interval + section["timeout_seconds"])

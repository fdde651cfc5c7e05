"""Device accounting: every joule a device used, turned into emissions, water and embodied carbon.

Energy comes in two ways: the delta of a hardware counter (wrap-safe, reload-safe, across
restarts and reboots) or the trapezoid of power readings. Each accounting step adds the
energy over a wall-clock span and its emissions at the intensities in force over that span.
The double-count rules live here too: one whole-node meter is accounted, and only for the rest
of the node its accounted parts did not count; a network's energy is spent outside the node.

Durations are monotonic (``now``); wall time (``wall_now``) only places a span on the intensity
timeline, so a step of the system clock neither adds energy nor loses it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Protocol

from ..snapshot import Counters, DeviceSnapshot, NodeRestPower
from ..kinds import covered_by_node_meter, outside_node, whole_node
from ..sources.base import JOULES_PER_KWH, MILLI, DeviceIdentity, DeviceReading, DeviceSource, kind_label

if TYPE_CHECKING:
    from ..carbon.base import Intensity, IntensityProvider

log = logging.getLogger(__name__)
SECONDS_PER_YEAR = 365.25 * 86400


@dataclass(frozen=True)
class Embodied:
    """Embodied carbon of one device, amortised over its lifetime while powered."""

    kg_co2e_per_device: float
    lifetime_years: float

    @property
    def grams_per_second(self) -> float:
        return self.kg_co2e_per_device * 1000.0 / (self.lifetime_years * SECONDS_PER_YEAR)


@dataclass
class Device:
    """One metered device: its counters and what the next accounting step starts from."""

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
        ident = self.identity
        return ident.counter_method if ident.has_energy_counter else ident.method_without_counter

    def describe(self) -> str:
        """How logs name the device: ``GPU GPU-…``, ``RAPL zone …``."""
        return f"{self.source.noun or kind_label(self.identity.kind)} {self.identity.uuid}"


class JobAccounts(Protocol):
    """Where a GPU's accounted energy goes on to be split among its jobs (the attribution engine)."""

    def account(self, device: DeviceIdentity, joules: float, grams: float, t0: float, t1: float,
                held_s: float | None = None) -> None: ...


def mark_node_devices(devices: list[Device]) -> None:
    """Only one whole-node meter accounts emissions: two BMC readings are the same watts. Where
    one is accounted, it measures the disks too: their estimate is exposed, not accounted."""
    nodes = [d for d in devices if whole_node(d.identity.kind) and d.identity.accounted]
    for d in nodes[1:]:
        log.warning("%s: another node power source is accounted already; exposing its energy only",
                    d.identity.uuid)
        d.identity = replace(d.identity, accounted=False)
    for d in devices:
        if nodes and covered_by_node_meter(d.identity.kind) and d.identity.accounted:
            log.info("%s: a whole-node meter measures it already; its estimate is exposed, not accounted",
                     d.identity.uuid)
            d.identity = replace(d.identity, accounted=False)


class Ledger:
    """The accounting of every device's energy, emissions, water and embodied carbon."""

    def __init__(self, intensity: IntensityProvider, *, pue: float = 1.0, embodied: Embodied | None = None,
                 wue_liters_per_kwh: float | None = None, attribution: JobAccounts | None = None) -> None:
        self.intensity, self.pue, self.embodied, self.wue = intensity, pue, embodied, wue_liters_per_kwh
        self.attribution = attribution
        self._parts_since_node = 0.0  # J of accounted GPUs/CPUs since the node's last accounting

    # -- one reading -------------------------------------------------------------
    def add_energy(self, dev: Device, reading: DeviceReading, now: float, wall_now: float) -> None:
        """The energy of the interval that ends with ``reading`` (taken at monotonic ``now``)."""
        if dev.identity.has_energy_counter:
            self.counter_delta(dev, reading.energy_mj, now, wall_now)
        else:
            self.integrate_point(dev, _integrated_power(dev, reading), now, wall_now)

    def add_embodied(self, dev: Device, now: float) -> None:
        """A GPU's embodied carbon over the sampled time since its last sample."""
        if self.embodied is not None and dev.last_sample_t is not None and dev.identity.kind == "gpu":
            dev.counters.embodied_g += self.embodied.grams_per_second * (now - dev.last_sample_t)

    def integrate_point(self, dev: Device, power_mw: float | None, now: float, wall_now: float) -> None:
        """Trapezoid step for devices without an energy counter (``now``: monotonic)."""
        if power_mw is None:
            return
        watts = power_mw * MILLI
        if dev.last_power_t is None and whole_node(dev.identity.kind):
            self._parts_since_node = 0.0  # the node's first point: what the parts used before is not its rest
        if dev.last_power_t is not None and now > dev.last_power_t:
            dt = now - dev.last_power_t
            self.account(dev, 0.5 * (watts + dev.last_power_w) * dt, wall_now - dt, wall_now, dt)
        dev.resumed_at = None
        dev.last_power_w, dev.last_power_t = watts, now

    def counter_delta(self, dev: Device, raw_mj: float | None, now: float, wall_now: float) -> None:
        if raw_mj is None:
            return
        c = dev.counters
        prev = c.raw_energy_mj
        c.raw_energy_mj = raw_mj
        if prev is None:
            dev.resumed_at = None
            return
        delta_mj = raw_delta(dev, prev, raw_mj)
        w0 = _span(dev, dev.last_sample_t, now, wall_now)
        if dev.last_sample_t is None and delta_mj > 0:
            log.info("%s: %.1f J used while the exporter was down", dev.describe(), delta_mj * MILLI)
        held = now - dev.last_sample_t if dev.last_sample_t is not None else 0.0
        self.account(dev, delta_mj * MILLI, w0, wall_now, held)

    # -- one accounting step ---------------------------------------------------------
    def account(self, dev: Device, joules: float, w0: float, w1: float, held_s: float) -> None:
        """Add ``joules`` used over the wall-clock span [w0, w1] and its emissions at the intensity in force.

        ``held_s`` is the sampled (monotonic) part of that span, over which embodied carbon accrues."""
        if joules <= 0:
            return
        c = dev.counters
        c.energy_j += joules
        if not dev.identity.accounted:
            return
        if whole_node(dev.identity.kind):
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

    def _node_rest(self, dev: Device, joules: float) -> float:
        """The part of a whole-node reading not already counted by its GPUs and CPUs (never negative)."""
        rest = max(joules - self._parts_since_node, 0.0)
        self._parts_since_node = 0.0
        dev.counters.rest_energy_j += rest
        return rest

    # -- figures of a sample -----------------------------------------------------------
    def emission_rate(self, dev: Device, intensity: Intensity) -> float | None:
        """Current operational emission rate (g/s): power x PUE x intensity; None without a power reading."""
        if dev.up and dev.identity.accounted and dev.reading and dev.reading.power_mw is not None:
            return dev.reading.power_mw * MILLI * self.pue * intensity.g_per_kwh / JOULES_PER_KWH
        return None


def node_rest_power(devices: Iterable[DeviceSnapshot]) -> NodeRestPower | None:
    """Node power minus GPUs minus measured CPU, only when every part is known (never below 0)."""
    devices = tuple(devices)
    nodes = [d for d in devices if whole_node(d.identity.kind) and d.up and d.reading and d.reading.power_mw]
    gpus = [d for d in devices if d.identity.kind == "gpu"]
    cpus = [d for d in devices if d.identity.kind == "cpu" and d.identity.accounted]
    parts = gpus + cpus
    if not nodes or not cpus or any(d.method == "estimated" for d in cpus) or \
            any(not d.up or not d.reading or d.reading.power_mw is None for d in parts):
        return None
    node = nodes[0]
    watts = (node.reading.power_mw - sum(d.reading.power_mw for d in parts)) * MILLI
    return NodeRestPower(dict(node.identity.labels).get("source", ""), max(watts, 0.0))


def raw_delta(dev: Device, prev: float, raw: float) -> float:
    """mJ between two hardware counter readings: wrap-safe, reload-safe, never negative."""
    wrap = dev.identity.energy_wrap_mj
    if dev.boot_changed:
        dev.boot_changed = False
        if wrap is not None:
            log.info("%s: the node rebooted while the exporter was down; a wrapping counter cannot "
                     "tell what was used then, counting from now", dev.describe())
            return 0.0
        return raw  # the counter restarted with the driver after boot: all of it is downtime energy
    if raw >= prev:
        return raw - prev
    if wrap is not None:
        return raw + wrap - prev
    log.warning("%s energy counter went from %d to %d mJ: driver reload or reset; counting from the "
                "new zero", dev.describe(), prev, raw)
    return raw


def _span(dev: Device, t0: float | None, now: float, wall_now: float) -> float:
    """Wall-clock start of the interval that ends now: monotonic duration back from the wall clock,
    or the saved time for the first delta after a restart (downtime spread at its own intensities)."""
    if dev.resumed_at is not None:
        start = dev.resumed_at
        dev.resumed_at = None
        if start < wall_now:
            return start
    return wall_now - (now - t0) if t0 is not None else wall_now


def _integrated_power(dev: Device, reading: DeviceReading) -> float | None:
    """The power to integrate: the 1-s average field where the device integrates it, else the gauge."""
    if dev.identity.method_without_counter == "integrated_average" and reading.power_average_mw is not None:
        return reading.power_average_mw
    return reading.power_mw

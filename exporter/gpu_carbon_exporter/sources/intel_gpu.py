"""Intel discrete GPUs (Data Center GPU Max, Flex, Arc) through the xe and i915 drivers' hwmon.

A card is ``/sys/class/drm/cardN/device`` with vendor 0x8086, bound to ``xe`` or ``i915``, with a
hwmon of the driver's name (both drivers register one for discrete GPUs only; docs/gpus.md):

- energy: ``energyN_input`` (µJ), the channel picked by its ``energyN_label``: "card" (the whole
  board, where the driver has it: Arc B) else "pkg" (the package: Max, Flex, Arc A); i915 labels
  nothing and has ``energy1_input`` for the whole device. Never by index: xe moved DG2's package
  energy from energy1 to energy2 when it went upstream.
- power: from energy deltas over at least ``POWER_WINDOW_S`` (neither driver has ``powerN_input``);
- power limit: ``powerN_max`` of the same channel (PL1, µW; 0 = disabled), else ``powerN_rated_max``;
- temperature: the ``tempN_input`` labelled "pkg" (m°C), where the driver has one;
- utilisation and processes: the DRM client usage stats in /proc (``SourceContext.drm_clients``,
  ``attribution/fdinfo.py``), so per-job attribution works as for NVML's process lists.

The drivers keep the energy in a 64-bit accumulator of the 32-bit hardware register, updated
when the file is read: reading it at least once a minute (the sampling interval) loses no
register wrap (``EnergyCounter`` says what else is done so that the counter never goes backwards).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..plugins import register
from .base import (SYSFS_SCHEMA, DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, DrmClients, drm_gpu_factory,
                   SharedReader, SourceUnavailable)

log = logging.getLogger(__name__)

VENDOR_ID = "0x8086"
DRIVERS = ("xe", "i915")
# The channel whose energy is the GPU's, by label, best first; i915 labels none (its energy1 is the device's).
ENERGY_LABELS = ("card", "pkg")
# Product names by PCI device id (the kernel's xe_pciids.h / i915_pciids.h; others: "Intel GPU 0x....").
MODELS = {
    0x0BD5: "Intel Data Center GPU Max 1550", 0x0BD6: "Intel Data Center GPU Max 1550",
    0x0BDA: "Intel Data Center GPU Max 1100", 0x0BDB: "Intel Data Center GPU Max 1100",
    0x56C0: "Intel Data Center GPU Flex 170", 0x56C1: "Intel Data Center GPU Flex 140",
    0x56A0: "Intel Arc A770", 0x56A1: "Intel Arc A750", 0x56A5: "Intel Arc A380",
    0xE20B: "Intel Arc B580", 0xE20C: "Intel Arc B570",
}
# Power is the energy delta over at least this long (s): shorter windows only add noise.
POWER_WINDOW_S = 0.5
# Above this a delta is not energy the card used (W): garbage, or a reset misread as a wrap.
PLAUSIBLE_W_PER_RATED_W, MIN_PLAUSIBLE_W = 4.0, 2000.0
# hwmon prints the driver's value as a signed long: negative past 2^63 µJ, or past 2^31 on a 32-bit
# kernel (whose 32-bit long is why hwmon gained energy64).
WRAP_BITS = (32, 64)
# A counter that has not moved for this long (s) does not count (a card draws watts even idle).
STUCK_S = 60.0


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def _optional_int(path: Path) -> int | None:
    try:
        return _read_int(path)
    except (OSError, ValueError):
        return None


@dataclass
class EnergyCounter:
    """A hwmon energy file's µJ as a counter in mJ that never goes backwards.

    What it reports equals the file's value as long as nothing odd happens, so the meter's saved
    baseline stays comparable across exporter restarts. The file only goes down when it wraps or
    restarts: a wrap shows as a signed print turning negative (``WRAP_BITS``) and is counted across
    where that delta is plausible for the time elapsed (``max_watts``); any other decrease is a
    reset (driver reload, GPU reset), counted from the new zero as the meter counts an NVML
    counter's reset; a rise beyond plausible (garbage) is not counted at all."""

    max_watts: float
    total_uj: int = 0  # what is reported, µJ
    prev_raw: int | None = None  # the file's last value, as printed
    prev_t: float = 0.0
    moved_at: float = 0.0

    def update(self, raw: int, now: float) -> tuple[float, str | None]:
        """The counter (mJ) after reading ``raw`` (µJ) at ``now``, and what was odd about it, if anything."""
        event = None
        if self.prev_raw is None:
            self.total_uj, self.moved_at = raw % 2**64, now
        else:
            dt = max(now - self.prev_t, 0.0)
            delta, event = _delta(self.prev_raw, raw, self.max_watts * dt * 1e6 + 1e6, dt)  # +1 J of slack
            self.total_uj += delta
            if raw != self.prev_raw:
                self.moved_at = now
        self.prev_raw, self.prev_t = raw, now
        return self.total_uj / 1000.0, event

    def stuck(self, now: float) -> bool:
        return self.prev_raw is not None and now - self.moved_at >= STUCK_S


def _delta(prev: int, raw: int, budget: float, dt: float) -> tuple[int, str | None]:
    """µJ counted between two readings of an energy file, and what was odd about them."""
    step = raw - prev
    if 0 <= step <= budget:
        return step, None
    if raw < 0 <= prev:  # a signed print past its top: the long wrapped
        for bits in WRAP_BITS:
            if 0 <= step + 2**bits <= budget:
                return step + 2**bits, f"wrapped at 2^{bits - 1} µJ (printed signed)"
    if step > 0:
        return 0, f"jumped by {step} µJ in {dt:.1f} s: not counted"
    kept = raw if 0 <= raw <= budget else 0
    return kept, f"went from {prev} to {raw} µJ: a reset; counting the {kept} µJ since"


@dataclass
class _Card:
    """What is read of one card, found at open."""

    pci: str
    driver: str
    device: Path  # the PCI device in /sys/devices (a card's number and its hwmon's may change)
    hwmon: Path
    channel: int  # N of energyN_input
    label: str
    counter: EnergyCounter
    temperature: Path | None  # the tempN_input labelled "pkg"
    power_ref: tuple[float, float] | None = None  # (mJ, t) the next power reading is measured from
    power_mw: int | None = None
    warned_stuck: bool = False

    @property
    def energy_file(self) -> Path:
        return self.hwmon / f"energy{self.channel}_input"


class IntelGpuSource(DeviceSource):
    """Every Intel discrete GPU with an xe or i915 hwmon; skipped quietly on a node with none."""

    name = "intel_gpu"
    noun = "Intel GPU"

    def __init__(self, root: str | Path = "/", *, clients: DrmClients | None = None, read_processes: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root, self.clients, self.read_processes, self.clock = Path(root), clients, read_processes, clock
        self._cards: dict[str, _Card] = {}

    # -- finding the cards ---------------------------------------------------------------
    def open(self) -> list[DeviceIdentity]:
        devices = []
        for card in self._candidates():
            found = self._identify(card)
            if found is not None:
                ident, state = found
                self._cards[ident.uuid] = state
                devices.append(ident)
        if not devices:
            raise SourceUnavailable(f"no Intel discrete GPU with an xe or i915 hwmon under "
                                    f"{self.root / 'sys/class/drm'}")
        return [replace(d, index=i) for i, d in enumerate(sorted(devices, key=lambda d: d.pci_bus_id))]

    def _candidates(self) -> list[Path]:
        """cardN entries (not renderD*, not connectors like card0-DP-1) of Intel GPUs bound to xe or i915."""
        out = []
        for card in sorted((self.root / "sys/class/drm").glob("card*")):
            dev = card / "device"
            if not re.fullmatch(r"card\d+", card.name) or not dev.exists():
                continue
            try:
                vendor = (dev / "vendor").read_text().strip().lower()
                driver = (dev / "driver").resolve().name
            except OSError:
                continue
            if vendor == VENDOR_ID and driver in DRIVERS:
                out.append(card)
        return out

    def _identify(self, card: Path) -> tuple[DeviceIdentity, _Card] | None:
        dev = card / "device"
        pci, driver = dev.resolve().name.lower(), (dev / "driver").resolve().name
        hwmons = [h for h in sorted((dev / "hwmon").glob("hwmon*")) if _text(h / "name") == driver]
        if not hwmons:
            log.info("Intel GPU %s (%s): no %s hwmon under %s (an integrated GPU or a virtual function): "
                     "not reported", pci, card.name, driver, dev / "hwmon")
            return None
        hwmon = hwmons[0]
        channel = _energy_channel(hwmon)
        if channel is None:
            log.warning("Intel GPU %s: %s has no energyN_input: no energy counter, not reported", pci, hwmon)
            return None
        n, label = channel
        device_id = _optional_int_hex(dev / "device")
        rated = _optional_int(hwmon / f"power{n}_rated_max")
        max_w = max(PLAUSIBLE_W_PER_RATED_W * (rated or 0) / 1e6, MIN_PLAUSIBLE_W)
        temps = [f.with_name(f.name.replace("_label", "_input")) for f in sorted(hwmon.glob("temp*_label"))
                 if _text(f) == "pkg"]
        state = _Card(pci, driver, dev.resolve(), hwmon, n, label, EnergyCounter(max_w), temps[0] if temps else None)
        name = MODELS.get(device_id or -1, f"Intel GPU {device_id:#06x}" if device_id is not None else "Intel GPU")
        log.info("Intel GPU %s (%s, %s): energy%d_input (%s)", pci, name, driver, n, label)
        ident = DeviceIdentity(index=0, uuid=f"intel-{pci}", name=name, pci_bus_id=pci, vendor="intel",
                               has_energy_counter=True)
        return ident, state

    # -- sampling ----------------------------------------------------------------------------
    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        card = self._cards[device.uuid]
        now = self.clock()
        r = DeviceReading()
        r.energy_mj, event = card.counter.update(self._raw_energy(card), now)
        if event is not None:
            log.warning("Intel GPU %s: %s %s", card.pci, card.energy_file, event)
        self._power(card, r.energy_mj, now)
        r.power_mw = card.power_mw
        if card.counter.stuck(now):
            r.errors.append(f"{card.energy_file}: not counting")
            if not card.warned_stuck:
                log.warning("Intel GPU %s: %s has not moved for %.0f s: the counter does not count; its energy "
                            "stays at what it read", card.pci, card.energy_file, STUCK_S)
        card.warned_stuck = card.counter.stuck(now)
        r.temperature_c = self._temperature(card)
        if slow:
            r.power_limit_mw = self._power_limit(card)
        self._clients(card, r)
        return r

    def _raw_energy(self, card: _Card) -> int:
        """The energy file's value (µJ). A driver reloaded or rebound registers a new hwmon (hwmonN
        renumbered): found again under the same PCI device, its counter then restarts (a reset)."""
        try:
            return _read_int(card.energy_file)
        except FileNotFoundError as err:
            if not self._find_hwmon_again(card):
                raise DeviceLost(f"Intel GPU {card.pci}: {card.energy_file}: {err}") from err
        except (OSError, ValueError) as err:
            raise DeviceLost(f"Intel GPU {card.pci}: {card.energy_file}: {err}") from err
        return self._raw_energy(card)

    def _find_hwmon_again(self, card: _Card) -> bool:
        for hwmon in sorted((card.device / "hwmon").glob("hwmon*")):
            channel = _energy_channel(hwmon) if _text(hwmon / "name") in DRIVERS else None
            if channel is not None and hwmon / f"energy{channel[0]}_input" != card.energy_file:
                log.warning("Intel GPU %s: %s is gone; reading %s/energy%d_input (%s) now", card.pci,
                            card.energy_file, hwmon, *channel)
                card.hwmon, card.driver, (card.channel, card.label) = hwmon, _text(hwmon / "name"), channel
                return True
        return False

    def _power(self, card: _Card, energy_mj: float, now: float) -> None:
        """Power (mW) from the energy over the last window of at least POWER_WINDOW_S."""
        if card.power_ref is None or now < card.power_ref[1]:
            card.power_ref = (energy_mj, now)
            return
        e0, t0 = card.power_ref
        if now - t0 >= POWER_WINDOW_S:
            card.power_mw = round((energy_mj - e0) / (now - t0))  # mJ/s = mW
            card.power_ref = (energy_mj, now)

    def _power_limit(self, card: _Card) -> int | None:
        """PL1 of the energy's channel (µW, 0 = disabled), else the rated maximum; in mW."""
        for name in (f"power{card.channel}_max", f"power{card.channel}_rated_max"):
            value = _optional_int(card.hwmon / name)
            if value:
                return value // 1000
        return None

    @staticmethod
    def _temperature(card: _Card) -> int | None:
        milli = None if card.temperature is None else _optional_int(card.temperature)
        return None if milli is None else milli // 1000

    def shared_readers(self) -> tuple[SharedReader, ...]:
        return (self.clients,) if self.clients is not None else ()

    def _clients(self, card: _Card, r: DeviceReading) -> None:
        """Utilisation and processes from the DRM client stats; a failure there loses only them."""
        if self.clients is None:
            return
        try:
            usage = self.clients.usage(card.pci)
        except Exception as err:  # noqa: BLE001 - /proc trouble must not stop the energy
            r.errors.append(f"DRM client stats: {err}")
            log.error("Intel GPU %s: reading the DRM client stats failed: %r", card.pci, err)
            return
        if usage.busy_pct is not None:
            r.gpu_util_pct = round(usage.busy_pct)
        if self.read_processes:
            r.processes = list(usage.processes)

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        """The power of the last read (a counter device is never integrated; no file is read here)."""
        return self._cards[device.uuid].power_mw


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _optional_int_hex(path: Path) -> int | None:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def _energy_channel(hwmon: Path) -> tuple[int, str] | None:
    """(N, label) of the energy channel to read: by label, "card" then "pkg"; unlabelled, the lowest N."""
    channels = {}
    for f in hwmon.glob("energy*_input"):
        m = re.fullmatch(r"energy(\d+)_input", f.name)
        if m:
            channels[int(m[1])] = _text(hwmon / f"energy{m[1]}_label")
    for label in ENERGY_LABELS:
        for n in sorted(channels):
            if channels[n] == label:
                return n, label
    return (min(channels), channels[min(channels)] or "device") if channels else None


register("source", "intel_gpu", drm_gpu_factory(IntelGpuSource),
         "Intel discrete GPUs (Max, Flex, Arc) through the xe and i915 hwmon; processes from DRM client stats",
         schema=dict(SYSFS_SCHEMA))

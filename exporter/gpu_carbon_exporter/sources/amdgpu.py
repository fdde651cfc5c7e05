"""AMD GPUs through the kernel's ``amdgpu`` driver in sysfs: no ROCm, no library.

Per card, ``sys/class/drm/cardN/device/`` (the PCI device; vendor ``0x1002``):

- ``gpu_metrics``: the driver's binary table (``gpu_metrics.py``). Where its revision carries the
  firmware's energy accumulator (2^-16 J a count), that is the device's energy (``method="counter"``);
- ``hwmon/hwmon*/power1_input`` (instantaneous, µW), else ``power1_average`` (the firmware's average,
  µW): the power gauge, and the energy where there is no usable accumulator, integrated at
  ``sampling.integration_hz`` (``method="integrated"``, or ``"integrated_average"`` for the average);
- ``gpu_busy_percent`` (%), ``mem_info_vram_used`` / ``mem_info_vram_total`` (bytes), hwmon
  ``temp*_input`` (m°C, the junction's where labelled), ``freq1_input`` (Hz, sclk), ``power1_cap`` (µW).

Every vendor's GPUs are the kind ``gpu`` (declared with the NVML source), so the rules, alerts and
dashboards treat a joule as a joule; ``DeviceIdentity.vendor`` is "amd". A card is counted once: its
compute partitions (MI300 in DPX/QPX/CPX) appear as extra DRM nodes on ``amdgpu_xcp.N`` platform
devices, with no PCI vendor, no ``gpu_metrics`` and no hwmon, and are skipped; the socket's energy
is the physical card's. The generic hwmon source leaves the ``amdgpu`` driver to this one.

The accumulator: 64 bits on MI200/MI300 firmware; a zero-extended 32-bit firmware counter on the
others (MI100, Navi, RDNA), which wraps at 2^32 counts (65.5 kJ, under four minutes at 300 W) and is
declared as wrapping (``energy_wrap_mj``) so the meter's deltas step over the wrap, as for RAPL. A
table that cannot be read at start-up (unknown revision, wrong size, truncated, garbage, energy all
ones) makes that card integrate its hwmon power instead, logged with the card and the file; one that
stops reading later marks the card down until it reads again (the firmware keeps counting, so the
gap is counted then). Nothing here ever moves a counter backwards.

Processes (``read_processes``): the DRM client usage stats of the card's PCI address
(``SourceContext.drm_clients``, ``attribution/fdinfo.py``: engine time of gfx, compute, dma, ...), as
for Intel's GPUs, and the KFD's per-process VRAM (``kfd.py``) for ROCm compute, which no DRM client
shows: such a process holds the GPU with its VRAM and no share. ``gpu_busy_percent`` stays the
utilisation (the hardware's, ROCm's compute included). Partition nodes are skipped here too: their
clients name the card's PCI address (``drm-pdev``), so they reach the card's process list.

At start-up each counter is checked against the power gauge (zeus's check, for the MI100 firmware
whose accumulator stays put or barely moves): over ``COUNTER_CHECK_S`` its energy must be within
0.1-10x power x time, else that card integrates its hwmon power (``method="integrated"``), logged.

A seam for the AMD SMI path (the ROCm library, not built here): it should key its GPUs by
``card_uuid`` and read the same accumulator at 2^-16 J a count, so a node that gains ROCm keeps its
saved counters; the PCI addresses it opens go in ``exclude_pci`` here, so no card is read twice.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path

from ..plugins import register
from . import gpu_metrics
from .base import (SYSFS_SCHEMA, DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, DrmClients, ProcessInfo,
                   SharedReader, SourceUnavailable, drm_gpu_factory)
from .gpu_metrics import BadTable
from .kfd import KfdProcesses

log = logging.getLogger(__name__)

AMD_PCI_VENDOR = "0x1002"
# PCI device ids whose firmware keeps a 64-bit accumulator behind a v1_1-v1_3 table: MI200
# (aldebaran, "EnergyAcc64bitHigh/Low") and the MI300/MI350 families on kernels that gave them v1_3.
# Every other v1_1-v1_3 table zero-extends the firmware's u32 EnergyAccumulator.
WIDE_COUNTER_DEVICES = frozenset({0x7408, 0x740C, 0x740F, 0x7410, 0x74A0, 0x74A1, 0x74A2, 0x74A5, 0x74A8,
                                  0x74A9, 0x74B5, 0x74B6, 0x74B9, 0x74BD, 0x75A0, 0x75A3, 0x75B0, 0x75B3})
WRAP_32_MJ = 2**32 * gpu_metrics.MJ_PER_COUNT
# libdrm's table of marketing names: "DEVICE,\tREVISION,\tName" in hex.
AMDGPU_IDS = "usr/share/libdrm/amdgpu.ids"
# The start-up check of each accumulator (s), and the band its energy must fall in, as a multiple of the
# power gauge x time (zeus#113): wide, as the gauge may be a 1-s average; a stuck counter reads 0x.
COUNTER_CHECK_S = 0.5
COUNTER_BAND = (0.1, 10.0)


def card_uuid(unique_id: str, pci_bus_id: str) -> str:
    """The device key (saved counters, the ``uuid`` label): the ASIC's ``unique_id`` (GFX9 and later),
    else its PCI address."""
    return f"amdgpu-{unique_id}" if unique_id else f"amdgpu-{pci_bus_id}"


def _read(path: Path) -> str:
    """A sysfs attribute, or "" where it is absent or unreadable (optional attributes only)."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _int(path: Path) -> int:
    """An integer attribute; OSError or ValueError where it cannot be read."""
    return int(path.read_text().strip())


@dataclass
class _Card:
    index: int
    drm: str  # card1
    device: Path  # sys/class/drm/card1/device
    pci_bus_id: str
    metrics: Path
    hwmon: Path | None
    power: Path | None  # power1_input or power1_average, µW
    temperature: Path | None  # m°C
    sclk: Path | None  # Hz
    counter: bool = False
    last_energy: tuple[float, float] | None = None  # (mJ, clock): the power gauge from the counter without hwmon

    @property
    def label(self) -> str:
        return f"AMD GPU {self.index} ({self.pci_bus_id}, {self.drm})"


def find_cards(root: Path, exclude_pci: Collection[str] = ()) -> list[tuple[str, Path]]:
    """(``cardN``, device directory) of each AMD GPU under ``root``, each physical device once, in PCI
    order (ROCm's order)."""
    found: dict[Path, tuple[str, Path]] = {}
    for card in root.glob("sys/class/drm/card*"):
        if not re.fullmatch(r"card\d+", card.name):
            continue  # connectors (card0-DP-1) are not devices
        device = card / "device"
        if _read(device / "vendor").lower() != AMD_PCI_VENDOR:
            continue  # another vendor's, or a partition's platform device (amdgpu_xcp.N: no PCI vendor)
        driver = device / "driver"
        if driver.exists() and driver.resolve().name != "amdgpu":
            continue  # an AMD card handed to vfio-pci or another driver
        real = device.resolve()
        if real.name in exclude_pci:
            continue
        if real not in found or _card_number(card.name) < _card_number(found[real][0]):
            found[real] = (card.name, device)
    return [found[real] for real in sorted(found, key=lambda p: p.name)]


def _card_number(name: str) -> int:
    return int(name[4:])


def _hwmon_files(device: Path) -> tuple[Path | None, Path | None, Path | None, Path | None]:
    """The card's hwmon directory, power file (power1_input, else power1_average), temperature
    (junction, else edge, else temp1) and sclk files; None for each the driver does not offer."""
    hwmon = next((h for h in sorted(device.glob("hwmon/hwmon*")) if _read(h / "name") == "amdgpu"), None)
    if hwmon is None:
        return None, None, None, None
    power = next((hwmon / f for f in ("power1_input", "power1_average") if (hwmon / f).exists()), None)
    temps = {_read(label): label.with_name(label.name.replace("_label", "_input"))
             for label in sorted(hwmon.glob("temp*_label"))}
    temperature = temps.get("junction") or temps.get("edge") or \
        (hwmon / "temp1_input" if (hwmon / "temp1_input").exists() else None)
    sclk = hwmon / "freq1_input" if (hwmon / "freq1_input").exists() else None
    return hwmon, power, temperature, sclk


def market_name(root: Path, device: Path) -> str:
    """The board's FRU product name (server cards), else libdrm's name for its PCI id and revision."""
    name = _read(device / "product_name")
    if name:
        return name
    did, rev = _read(device / "device")[2:].upper(), _read(device / "revision")[2:].upper()
    names = {}  # revision -> name, of this device id
    for line in _read(root / AMDGPU_IDS).splitlines():
        parts = [p.strip() for p in line.split(",", 2)]
        if len(parts) == 3 and parts[0].upper() == did:
            names.setdefault(parts[1].upper(), parts[2])
    if names:
        return names.get(rev) or next(iter(names.values()))  # another revision's name is closer than none
    return f"AMD GPU 0x{did.lower()}" if did else "AMD GPU"


class AmdgpuSource(DeviceSource):
    """Every AMD GPU the amdgpu driver shows in sysfs; one card's trouble never stops the others."""

    name = "amdgpu"
    noun = "AMD GPU"

    def __init__(self, root: str | Path = "/", clock: Callable[[], float] = time.monotonic,
                 exclude_pci: Collection[str] = (), *, clients: DrmClients | None = None,
                 read_processes: bool = False, sleep: Callable[[float], None] = time.sleep) -> None:
        self.root, self.clock, self.exclude_pci, self.sleep = Path(root), clock, exclude_pci, sleep
        self.clients, self.read_processes = clients, read_processes
        self.kfd = KfdProcesses(self.root)
        self._cards: dict[str, _Card] = {}
        self._info: dict[str, str] = {}

    def open(self) -> list[DeviceIdentity]:
        cards = find_cards(self.root, self.exclude_pci)
        if not cards:
            raise SourceUnavailable(f"no AMD GPU (amdgpu driver) under {self.root / 'sys/class/drm'}")
        version = _read(self.root / "sys/module/amdgpu/version") or _read(self.root / "proc/sys/kernel/osrelease")
        self._info = {"driver_version": version}
        devices = [self._identify(index, drm, device) for index, (drm, device) in enumerate(cards)]
        self._check_counters()
        return [d if self._cards[d.uuid].counter else replace(d, has_energy_counter=False, energy_wrap_mj=None)
                for d in devices]

    def _identify(self, index: int, drm: str, device: Path) -> DeviceIdentity:
        pci = device.resolve().name
        card = _Card(index, drm, device, pci, device / "gpu_metrics", *_hwmon_files(device))
        uuid = card_uuid(_read(device / "unique_id"), pci)
        self._cards[uuid] = card
        wrap = self._probe_counter(card)
        average = card.power is not None and card.power.name == "power1_average"
        return DeviceIdentity(index=index, uuid=uuid, name=market_name(self.root, device), pci_bus_id=pci,
                              has_energy_counter=card.counter, energy_wrap_mj=wrap, vendor="amd",
                              method_without_counter="integrated_average" if average else "integrated")

    def _probe_counter(self, card: _Card) -> float | None:
        """Whether the card's energy is its accumulator (sets ``card.counter``); the wrap, if it wraps.
        Where it is not, says why and what is measured instead."""
        try:
            table = gpu_metrics.parse(card.metrics.read_bytes())
        except FileNotFoundError:
            self._fallback(card, "no such file (a kernel or an ASIC without SMU metrics)", logging.INFO)
            return None
        except (OSError, BadTable) as err:
            self._fallback(card, str(err), logging.WARNING)
            return None
        if table.energy_count is None:
            why = "reads all ones: not available on this ASIC" if table.energy_bits else "has none (an APU's table)"
            self._fallback(card, f"v{table.revision}: energy_accumulator {why}", logging.INFO)
            return None
        card.counter = True
        did = int(_read(card.device / "device") or "0", 16)
        narrow = table.energy_bits == 32 or (table.revision in ("1.1", "1.2", "1.3")
                                            and did not in WIDE_COUNTER_DEVICES and table.energy_count < 2**32)
        log.info("%s: energy from %s (v%s, %s-bit accumulator)%s", card.label, card.metrics, table.revision,
                 32 if narrow else 64, "" if card.power else "; no hwmon power: the power gauge follows the counter")
        return WRAP_32_MJ if narrow else None

    @staticmethod
    def _fallback(card: _Card, why: str, level: int) -> None:
        if card.power is None:
            log.error("%s: %s: %s, and no hwmon power1_input or power1_average: its energy cannot be measured; "
                      "shown down until one can be read", card.label, card.metrics, why)
            return
        method = "integrated_average" if card.power.name == "power1_average" else "integrated"
        log.log(level, "%s: %s: %s; integrating hwmon %s at sampling.integration_hz instead (method=\"%s\")",
                card.label, card.metrics, why, card.power.name, method)

    def _check_counters(self) -> None:
        """Zeus's start-up check: a card whose accumulator moved less than a tenth (or more than ten
        times) of its power gauge x time over ``COUNTER_CHECK_S`` integrates its power instead. One
        wait for all cards; inconclusive (kept) where the clock moved less than half of it or the gauge reads 0."""
        cards = [c for c in self._cards.values() if c.counter and c.power is not None]
        first = {c.label: self._check_point(c) for c in cards}
        if not any(first.values()):
            return
        self.sleep(COUNTER_CHECK_S)
        for card in cards:
            before, after = first[card.label], self._check_point(card)
            if before is None or after is None or after[2] - before[2] < COUNTER_CHECK_S / 2:
                continue  # the clock did not move enough to judge (a test's clock, a sleep cut short)
            expected = (before[1] + after[1]) / 2 * (after[2] - before[2])  # mW x s = mJ
            delta = (after[0] - before[0]) % WRAP_32_MJ if after[0] < before[0] else after[0] - before[0]
            low, high = COUNTER_BAND
            if expected > 0 and not low * expected <= delta <= high * expected:
                card.counter = False
                log.warning("%s: %s: the energy accumulator moved %.3f J in %.2f s while %s read %.1f W "
                            "(%.2fx, outside %g-%gx): a broken counter (as on MI100 firmware); integrating hwmon "
                            "%s at sampling.integration_hz instead (method=\"integrated\")", card.label, card.metrics,
                            delta / 1000, after[2] - before[2], card.power, expected / (after[2] - before[2]) / 1000,
                            delta / expected, low, high, card.power.name if card.power else "")

    def _check_point(self, card: _Card) -> tuple[float, int, float] | None:
        """(accumulator mJ, power mW, clock) for the counter check; None where either cannot be read."""
        try:
            return self._energy_mj(card), _int(card.power) // 1000 if card.power else 0, self.clock()
        except (DeviceLost, OSError, ValueError):
            return None

    def info(self) -> dict[str, str]:
        return dict(self._info)

    def shared_readers(self) -> tuple[SharedReader, ...]:
        return (self.clients,) if self.clients is not None and self.read_processes else ()

    # -- sampling ----------------------------------------------------------
    def _present(self, card: _Card) -> None:
        if not card.device.exists():
            raise DeviceLost(f"{card.label}: {card.device} is gone (card removed or driver unbound)")

    def _power_file(self, card: _Card) -> Path:
        """The power file of a card that integrates it; looked for again while it is missing."""
        if card.power is None:
            card.hwmon, card.power, card.temperature, card.sclk = _hwmon_files(card.device)
        if card.power is None:
            raise DeviceLost(f"{card.label}: no usable energy counter ({card.metrics}) and no hwmon "
                             f"power1_input or power1_average under {card.device / 'hwmon'}")
        return card.power

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        """Power for the integration loop (cards without a usable accumulator)."""
        card = self._cards[device.uuid]
        self._present(card)
        path = self._power_file(card)
        try:
            return _int(path) // 1000
        except (OSError, ValueError) as err:
            raise DeviceLost(f"{card.label}: {path}: {err}") from err

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        card = self._cards[device.uuid]
        self._present(card)
        r = DeviceReading()
        if card.counter:
            r.energy_mj = self._energy_mj(card)
            r.power_mw = self._gauge(card.power, 1000, r, "power")
            if r.power_mw is None:
                r.power_mw = self._power_from_counter(card, r.energy_mj, device.energy_wrap_mj)
        else:
            r.power_mw = self.read_power_mw(device)
        if card.power is not None and r.power_mw is not None:
            if card.power.name == "power1_average":
                r.power_average_mw = r.power_mw
            else:
                r.power_instant_mw = r.power_mw
        r.gpu_util_pct = self._gauge(card.device / "gpu_busy_percent", 1, r, "busy")
        r.memory_used_bytes = self._gauge(card.device / "mem_info_vram_used", 1, r, "vram used")
        r.memory_total_bytes = self._gauge(card.device / "mem_info_vram_total", 1, r, "vram total")
        r.temperature_c = self._gauge(card.temperature, 1000, r, "temperature")
        r.sm_clock_mhz = self._gauge(card.sclk, 1_000_000, r, "sclk")
        if slow and card.hwmon is not None:
            r.power_limit_mw = self._gauge(card.hwmon / "power1_cap", 1000, r, "power cap")
        if self.read_processes:
            r.processes = self._processes(card, r)
        return r

    def _processes(self, card: _Card, r: DeviceReading) -> list[ProcessInfo]:
        """The card's DRM clients with their engine-time shares, and the ROCm processes the KFD shows
        holding VRAM on it: those get their VRAM and no share (their engine time is not in fdinfo)."""
        procs: dict[int, ProcessInfo] = {}
        if self.clients is not None:
            try:
                procs = {p.pid: p for p in self.clients.usage(card.pci_bus_id).processes}
            except Exception as err:  # noqa: BLE001 - /proc trouble must not stop the energy
                r.errors.append(f"DRM client stats: {err}")
                log.error("%s: reading the DRM client stats failed: %r", card.label, err)
        for pid, vram in self.kfd.vram(card.pci_bus_id).items():
            if vram > 0:
                procs[pid] = ProcessInfo(pid, vram, None)
        return [procs[pid] for pid in sorted(procs)]

    def _energy_mj(self, card: _Card) -> float:
        """The accumulator (mJ). A table that stops reading marks the card down: the meter keeps the last
        value as its baseline, so the energy of the gap is counted once the table reads again."""
        try:
            table = gpu_metrics.parse(card.metrics.read_bytes())
            if table.energy_count is None:
                raise BadTable(f"v{table.revision}: energy_accumulator reads all ones (not available)")
        except (OSError, BadTable) as err:
            raise DeviceLost(f"{card.label}: {card.metrics}: {err}; its energy counter is unreadable") from err
        return table.energy_mj

    def _power_from_counter(self, card: _Card, energy_mj: float, wrap_mj: float | None) -> int | None:
        """Mean power since the last read, from the accumulator, for a card without hwmon power."""
        now, last = self.clock(), card.last_energy
        card.last_energy = (energy_mj, now)
        if last is None or now <= last[1]:
            return None
        delta = energy_mj - last[0]
        if delta < 0:
            if wrap_mj is None:
                return None  # a reset: no power this time
            delta += wrap_mj
        return int(delta / (now - last[1]))

    @staticmethod
    def _gauge(path: Path | None, per_unit: int, r: DeviceReading, what: str) -> int | None:
        """An optional integer gauge in the reading's unit (``per_unit`` file units each); a failed read
        is noted in the reading's errors and leaves the gauge empty."""
        if path is None:
            return None
        try:
            return _int(path) // per_unit
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            r.errors.append(f"{what}: {path}: {err}")
            return None


register("source", "amdgpu", drm_gpu_factory(AmdgpuSource),
         "AMD GPUs through the amdgpu driver's sysfs (gpu_metrics energy, hwmon power); processes from DRM "
         "client stats and the KFD", schema=SYSFS_SCHEMA)

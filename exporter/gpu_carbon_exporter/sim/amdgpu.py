"""A fake amdgpu sysfs tree: a scenario's AMD cards, laid out as the kernel lays them out.

The production source (``sources/amdgpu.py``) reads it unchanged. Per card k (PCI ``0000:BB:00.0``)::

    sys/devices/pci0000:00/0000:BB:00.0/  vendor (0x1002), device, revision, unique_id,
        product_name (server cards' FRU), gpu_metrics (binary), gpu_busy_percent,
        mem_info_vram_used, mem_info_vram_total, current_compute_partition, driver -> amdgpu,
        hwmon/hwmonN/ name (amdgpu), power1_input or power1_average (µW), power1_cap (µW),
                       temp1/temp2 _input (m°C) and _label (edge, junction), freq1_input (Hz) and _label
        drm/cardN, drm/renderD(128+k)
    sys/class/drm/cardN, renderD* -> the nodes above;  sys/class/hwmon/hwmonN -> the card's hwmon
    sys/devices/platform/amdgpu_xcp.J/drm/{cardM,renderD*}: the compute partitions beyond the first
    (``xcp_partitions``): DRM nodes with no PCI vendor, no table, no hwmon, as the driver makes them
    sys/class/kfd/kfd/topology/nodes/N/ gpu_id, properties: node 0 a CPU (gpu_id 0), then one node per
        partition of each card (``kfd_gpu_ids``), at the card's ``domain`` and ``location_id``, with its
        partition's render node as ``drm_render_minor`` (``render_nodes``: partition 0's is the card's own)

beside a BMC's VGA card (card0, ASPEED, vendor 0x1a03), libdrm's ``amdgpu.ids`` and
``sys/module/amdgpu/version``. ``update(t)`` writes every value for scenario time t with exact truth:
the energy accumulator is floor(E(t) x 2^16) counts (E the pattern's integral, plus the device's
``energy_offset_mj``), modulo 2^32 on a 32-bit firmware counter, all ones where the model has none.
``power1_input`` is the pattern's power at t, ``power1_average`` its mean over the last second.

With ``attach_clients(scenario, proc)`` it also writes the DRM client usage stats of the scenario's
jobs on its cards into a fake /proc (``amdgpu_clients.py``) on every ``update``.

The tables are ctypes re-creations of the kernel's structs (``kgd_pp_interface.h``), written with
the driver's 0xFF fill; the parser's offsets (``sources/gpu_metrics.py``) are not used here.
"""
from __future__ import annotations

import ctypes as C
import math
import os
import shutil
import threading
from pathlib import Path

from .amdgpu_clients import AmdgpuClients
from .scenario import Scenario, SimDevice
from .ticker import Ticker

u8, u16, u32, u64 = C.c_uint8, C.c_uint16, C.c_uint32, C.c_uint64
COUNTS_PER_J = 65536  # the accumulator's unit is 2^-16 J
XCP_SLOTS = 8  # NUM_XCP
AMDGPU_IDS = """# List of AMDGPU IDs (the simulated node's excerpt of libdrm's amdgpu.ids)
1.0.0
738C,\t01,\tAMD Instinct MI100
74A1,\t00,\tAMD Instinct MI300X
7550,\tC0,\tAMD Radeon RX 9070 XT
"""

# --- the kernel's structs ------------------------------------------------------------------------
_HEADER = [("structure_size", u16), ("format_revision", u8), ("content_revision", u8)]
_TEMPS6 = [(f"temperature_{n}", u16) for n in ("edge", "hotspot", "mem", "vrgfx", "vrsoc", "vrmem")]
_ACTIVITY3 = [("average_gfx_activity", u16), ("average_umc_activity", u16), ("average_mm_activity", u16)]
_CLOCKS7 = [(f"{p}_{c}", u16) for p in ("average", "current")
            for c in ("gfxclk", "socclk", "uclk", "vclk0", "dclk0", "vclk1", "dclk1")]
_V1_1 = _TEMPS6 + _ACTIVITY3 + [("average_socket_power", u16), ("energy_accumulator", u64),
                                 ("system_clock_counter", u64)] + _CLOCKS7 + [
    ("throttle_status", u32), ("current_fan_speed", u16), ("pcie_link_width", u16), ("pcie_link_speed", u16),
    ("padding", u16), ("gfx_activity_acc", u32), ("mem_activity_acc", u32), ("temperature_hbm", u16 * 4)]
_V1_3_TAIL = [("voltage_soc", u16), ("voltage_gfx", u16), ("voltage_mem", u16), ("padding1", u16),
              ("indep_throttle_status", u64)]
_MI300_HEAD = [("temperature_hotspot", u16), ("temperature_mem", u16), ("temperature_vrsoc", u16),
               ("curr_socket_power", u16), ("average_gfx_activity", u16), ("average_umc_activity", u16)]
_RESIDENCY = [(n, u32) for n in ("accumulation_counter", "prochot_residency_acc", "ppt_residency_acc",
                                 "socket_thm_residency_acc", "vr_thm_residency_acc", "hbm_thm_residency_acc")]
_LINKS = [("pcie_link_width", u16), ("pcie_link_speed", u16), ("xgmi_link_width", u16), ("xgmi_link_speed", u16),
          ("gfx_activity_acc", u32), ("mem_activity_acc", u32)] + [(n, u64) for n in (
              "pcie_bandwidth_acc", "pcie_bandwidth_inst", "pcie_l0_to_recov_count_acc", "pcie_replay_count_acc",
              "pcie_replay_rover_count_acc")]
_NAK = [("pcie_nak_sent_count_acc", u32), ("pcie_nak_rcvd_count_acc", u32)]
_XGMI = [("xgmi_read_data_acc", u64 * 8), ("xgmi_write_data_acc", u64 * 8)]
_MI300_CLOCKS = [("current_gfxclk", u16 * 8), ("current_socclk", u16 * 4), ("current_vclk0", u16 * 4),
                 ("current_dclk0", u16 * 4), ("current_uclk", u16)]
_XCP_V1_0 = [("gfx_busy_inst", u32 * 8), ("jpeg_busy", u16 * 32), ("vcn_busy", u16 * 4), ("gfx_busy_acc", u64 * 8)]
_XCP_V1_1 = _XCP_V1_0 + [("gfx_below_host_limit_acc", u64 * 8)]
_XCP_V1_2 = [("gfx_busy_inst", u32 * 8), ("jpeg_busy", u16 * 40), ("vcn_busy", u16 * 4), ("gfx_busy_acc", u64 * 8)] + [
    (n, u64 * 8) for n in ("gfx_below_host_limit_ppt_acc", "gfx_below_host_limit_thm_acc", "gfx_low_utilization_acc",
                           "gfx_below_host_limit_total_acc")]


def _struct(name: str, fields: list) -> type:
    return type(name, (C.Structure,), {"_fields_": fields})


def _mi300(xcp: list, v1_7: bool) -> list:
    """The MI300 tables with partition stats: v1_6, and v1_7/v1_8 (mem_max_bandwidth, xgmi link status)."""
    xcp_struct = _struct("xcp", xcp)
    head = _MI300_HEAD + ([("mem_max_bandwidth", u64)] if v1_7 else [])
    status = [("xgmi_link_status", u16 * 8), ("padding", u16)] if v1_7 else []
    return _HEADER + head + [("energy_accumulator", u64), ("system_clock_counter", u64)] + _RESIDENCY + [
        ("gfxclk_lock_status", u32)] + _LINKS + _NAK + _XGMI + status + [("firmware_timestamp", u64)] + \
        _MI300_CLOCKS + [("num_partition", u16), ("xcp_stats", xcp_struct * XCP_SLOTS),
                         ("pcie_lc_perf_other_end_recovery", u32)]


def _mi300_early(jpeg: bool, nak: bool) -> list:
    """The first MI300 tables: v1_4, and v1_5 (jpeg activity, PCIe NAK counts)."""
    return _HEADER + _MI300_HEAD + [("vcn_activity", u16 * 4)] + ([("jpeg_activity", u16 * 32)] if jpeg else []) + [
        ("energy_accumulator", u64), ("system_clock_counter", u64), ("throttle_status", u32),
        ("gfxclk_lock_status", u32)] + _LINKS + (_NAK if nak else []) + _XGMI + [("firmware_timestamp", u64)] + \
        _MI300_CLOCKS + [("padding", u16)]


TABLES: dict[str, type] = {
    "1.0": _struct("gpu_metrics_v1_0", _HEADER + [("system_clock_counter", u64)] + _TEMPS6 + _ACTIVITY3 + [
        ("average_socket_power", u16), ("energy_accumulator", u32)] + _CLOCKS7 + [
        ("throttle_status", u32), ("current_fan_speed", u16), ("pcie_link_width", u8), ("pcie_link_speed", u8)]),
    "1.1": _struct("gpu_metrics_v1_1", _HEADER + _V1_1),
    "1.2": _struct("gpu_metrics_v1_2", _HEADER + _V1_1 + [("firmware_timestamp", u64)]),
    "1.3": _struct("gpu_metrics_v1_3", _HEADER + _V1_1 + [("firmware_timestamp", u64)] + _V1_3_TAIL),
    "1.4": _struct("gpu_metrics_v1_4", _mi300_early(jpeg=False, nak=False)),
    "1.5": _struct("gpu_metrics_v1_5", _mi300_early(jpeg=True, nak=True)),
    "1.6": _struct("gpu_metrics_v1_6", _mi300(_XCP_V1_0, v1_7=False)),
    "1.7": _struct("gpu_metrics_v1_7", _mi300(_XCP_V1_1, v1_7=True)),
    "1.8": _struct("gpu_metrics_v1_8", _mi300(_XCP_V1_2, v1_7=True)),
}


def gpu_metrics_table(revision: str, *, energy_count: int | None, clock_ns: int, power_w: float,
                      busy_pct: int, hotspot_c: int) -> bytes:
    """One table as the driver writes it: all ones, then the header and what the firmware filled."""
    struct = TABLES[revision]
    buf = bytearray(b"\xff" * C.sizeof(struct))
    t = struct.from_buffer(buf)
    t.structure_size = C.sizeof(struct)
    t.format_revision, t.content_revision = (int(x) for x in revision.split("."))
    t.system_clock_counter = clock_ns
    if energy_count is not None:
        t.energy_accumulator = energy_count
    setattr(t, "average_socket_power" if revision < "1.4" else "curr_socket_power", min(round(power_w), 0xFFFE))
    t.average_gfx_activity, t.temperature_hotspot = busy_pct, hotspot_c
    return bytes(buf)


# --- the tree -------------------------------------------------------------------------------------
def _w(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)


class AmdgpuSimulator(Ticker):
    """Lays out the tree for ``devices`` (a scenario's AMD cards) under ``root``; ``update(t)`` rewrites it."""
    thread_name = "amdgpu-sim"

    BOOT_NS = 86_400 * 10**9  # system_clock_counter: boot time, a day before scenario t = 0

    def __init__(self, root: str | Path, devices: list[SimDevice], xcp_partitions: int = 1) -> None:
        self.root, self.devices = Path(root), list(devices)
        self.cards: list[Path] = []  # each card's PCI device directory
        self.render_nodes: list[list[str]] = []  # each card's render nodes, one per compute partition
        self.kfd_gpu_ids: list[list[int]] = []  # each card's KFD gpu_ids, one per compute partition
        self.hwmon: list[Path] = []
        self.broken: dict[tuple[int, str], bytes | None] = {}  # (card, file) -> what it holds instead (None: gone)
        self.counter_base: dict[int, int] = {}  # card -> counts the firmware restarted at (reset_counter)
        self.frozen: dict[int, int] = {}  # card -> the counts its accumulator stays at (freeze_counter)
        self.clients: AmdgpuClients | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t = 0.0
        self._layout(xcp_partitions)
        self.update(0.0)

    def _layout(self, xcp_partitions: int) -> None:
        r, pci = self.root, self.root / "sys/devices/pci0000:00"
        bmc = pci / "0000:02:00.0"  # a server's BMC VGA: a DRM card of another vendor
        _w(bmc / "vendor", "0x1a03")
        self._nodes(bmc, "card0")
        _w(r / "usr/share/libdrm/amdgpu.ids", AMDGPU_IDS.rstrip("\n"))
        _w(r / "sys/module/amdgpu/version", "6.12.0-sim")
        _w(r / "sys/bus/pci/drivers/amdgpu/module", "amdgpu")
        extra = 1 + len(self.devices)
        for k, dev in enumerate(self.devices):
            board = dev.model.amd
            assert board is not None, f"{dev.model.name} is not an AMD model"
            d = pci / f"0000:{(0x11 + 0x20 * k) % 0x100:02x}:00.0"
            self.cards.append(d)
            _w(d / "vendor", "0x1002")
            _w(d / "device", f"0x{board.device_id:04x}")
            _w(d / "revision", f"0x{board.revision_id:02x}")
            _w(d / "unique_id", dev.uuid.removeprefix("amdgpu-"))
            _link(d / "driver", r / "sys/bus/pci/drivers/amdgpu")
            if board.fru:
                _w(d / "product_name", dev.model.name)
            _w(d / "mem_info_vram_total", dev.model.memory_bytes)
            _w(d / "current_compute_partition", {1: "SPX", 2: "DPX", 4: "QPX", 8: "CPX"}.get(xcp_partitions, "SPX"))
            self._nodes(d, f"card{k + 1}", f"renderD{128 + k}")
            self.render_nodes.append([f"renderD{128 + k}"])
            self.hwmon.append(self._hwmon(d, k, dev.model.max_w))
            for j in range(1, xcp_partitions):  # the partitions beyond the first: render (and card) nodes only
                xcp = r / f"sys/devices/platform/amdgpu_xcp.{k * (xcp_partitions - 1) + j - 1}"
                self._nodes(xcp, f"card{extra}", f"renderD{128 + extra + 16}")
                self.render_nodes[k].append(f"renderD{128 + extra + 16}")
                extra += 1
        self._kfd_topology()

    def _kfd_topology(self) -> None:
        """The KFD's nodes: a CPU, then each card's partitions (kfd_topology.c's properties, an excerpt)."""
        nodes = self.root / "sys/class/kfd/kfd/topology/nodes"
        _w(nodes / "0/gpu_id", 0)
        _w(nodes / "0/properties", "cpu_cores_count 96\nsimd_count 0\nlocation_id 0\ndrm_render_minor 0\ndomain 0")
        n = 1
        for k, card in enumerate(self.cards):
            domain, bus = card.name.split(":")[0], card.name.split(":")[1]
            self.kfd_gpu_ids.append([])
            for j, node in enumerate(self.render_nodes[k]):
                gpu_id = 40000 + 1000 * k + j
                self.kfd_gpu_ids[k].append(gpu_id)
                _w(nodes / f"{n}/gpu_id", gpu_id)
                _w(nodes / f"{n}/properties", f"cpu_cores_count 0\nsimd_count {304 // len(self.render_nodes[k])}\n"
                   f"location_id {int(bus, 16) << 8}\ndrm_render_minor {node.removeprefix('renderD')}\n"
                   f"domain {int(domain, 16)}")
                n += 1

    def _nodes(self, device: Path, *nodes: str) -> None:
        for node in nodes:
            _w(device / "drm" / node / "dev", "226:0")
            _link(device / "drm" / node / "device", device)
            _link(self.root / "sys/class/drm" / node, device / "drm" / node)

    def _hwmon(self, d: Path, k: int, max_w: float) -> Path:
        hw = d / f"hwmon/hwmon{2 + k}"
        _w(hw / "name", "amdgpu")
        _w(hw / "power1_cap", round(max_w * 1e6))
        _w(hw / "power1_label", "PPT")
        _w(hw / "temp1_label", "edge")
        _w(hw / "temp2_label", "junction")
        _w(hw / "freq1_label", "sclk")
        _link(self.root / f"sys/class/hwmon/hwmon{2 + k}", hw)
        return hw

    # -- faults ------------------------------------------------------------------------------------
    def break_file(self, card: int, name: str, content: bytes | None) -> None:
        """From now on ``name`` (relative to the card's device directory) holds ``content``, or is gone."""
        with self._lock:
            self.broken[(card, name)] = content
            path = self.cards[card] / name
            if content is None:
                path.unlink(missing_ok=True)
            else:
                self._write(path, content)

    def heal(self, card: int, name: str) -> None:
        with self._lock:
            self.broken.pop((card, name), None)

    def reset_counter(self, card: int, t: float) -> None:
        """The firmware restarts its accumulator from zero (a GPU reset)."""
        self.counter_base[card] = self._counts(card, t, raw=True)

    def freeze_counter(self, card: int, t: float) -> None:
        """The accumulator stops at its value at ``t`` while the card keeps drawing power (MI100's broken
        counter, ROCm/amdsmi#38)."""
        self.frozen[card] = self._counts(card, t)

    def attach_clients(self, scenario: Scenario, proc_root: str | Path) -> AmdgpuClients:
        """Write the fdinfo of ``scenario``'s jobs on these cards under ``proc_root`` from now on."""
        self.clients = AmdgpuClients(scenario, self.devices, [c.name for c in self.cards], proc_root,
                                     self.render_nodes)
        self.clients.update(self._t)
        return self.clients

    def vanish(self, card: int) -> None:
        """The card is removed (hot unplug, driver unbound): its device directory goes."""
        with self._lock:
            shutil.rmtree(self.cards[card], ignore_errors=True)

    # -- values ------------------------------------------------------------------------------------
    def _counts(self, k: int, t: float, raw: bool = False) -> int:
        dev = self.devices[k]
        counts = math.floor(dev.pattern.energy(t) * COUNTS_PER_J) + round(dev.energy_offset_mj * COUNTS_PER_J / 1000)
        if raw:
            return counts
        if k in self.frozen:
            return self.frozen[k]
        return (counts - self.counter_base.get(k, 0)) % 2 ** dev.model.amd.counter_bits

    def _files(self, k: int, t: float) -> dict[str, bytes | str]:
        """Every value of card k at scenario time t, by path under its device directory."""
        dev = self.devices[k]
        board, u = dev.model.amd, dev.utilization(t)
        power = dev.pattern.power(t) if board.power_file == "power1_input" else dev.pattern.mean_power(t - 1.0, t)
        busy, hotspot = round(100 * u), int(35 + 50 * u)
        out: dict[str, bytes | str] = {
            "gpu_busy_percent": str(busy),
            "mem_info_vram_used": str(int(dev.model.memory_bytes * (0.01 + 0.74 * u))),
            f"{self.hwmon[k].relative_to(self.cards[k])}/{board.power_file}": str(round(power * 1e6)),
            f"{self.hwmon[k].relative_to(self.cards[k])}/temp1_input": str((hotspot - 8) * 1000),
            f"{self.hwmon[k].relative_to(self.cards[k])}/temp2_input": str(hotspot * 1000),
            f"{self.hwmon[k].relative_to(self.cards[k])}/freq1_input":
                str(int(1e6 * (500 + (dev.model.max_sm_mhz - 500) * min(1.0, 3 * u)))),
        }
        if board.gpu_metrics is not None:
            out["gpu_metrics"] = gpu_metrics_table(
                board.gpu_metrics, energy_count=self._counts(k, t) if dev.model.energy_counter else None,
                clock_ns=self.BOOT_NS + round(t * 1e9), power_w=power, busy_pct=busy, hotspot_c=hotspot)
        return out

    @staticmethod
    def _write(path: Path, value: bytes | str) -> None:
        """Atomically, as sysfs: a reader never sees a half-written value."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(value) if isinstance(value, bytes) else tmp.write_text(f"{value}\n")
        os.replace(tmp, path)

    def update(self, t: float) -> None:
        self._t = t
        if self.clients is not None and self.clients.proc.exists():
            self.clients.update(t)
        with self._lock:
            for k, card in enumerate(self.cards):
                if not card.exists():
                    continue  # vanished
                for name, value in self._files(k, t).items():
                    if (k, name) not in self.broken:
                        self._write(card / name, value)

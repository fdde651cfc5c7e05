"""The amdgpu driver's ``gpu_metrics`` table: a versioned binary struct, parsed by its header.

``/sys/class/drm/cardN/device/gpu_metrics`` holds one ``struct gpu_metrics_vF_C``
(``drivers/gpu/drm/amd/include/kgd_pp_interface.h``): a header (u16 ``structure_size``, u8
``format_revision`` F, u8 ``content_revision`` C), then the fields of that revision, native-endian
(little-endian on x86-64 and arm64) and naturally aligned (not packed). F = 1 is a discrete GPU's
table, F = 2 and 3 an APU's. The layout is chosen by (F, C) *and* the size: v1_6 changed its layout
once without a new revision (a 384-byte form, withdrawn, then the 1664-byte one), so a size that is
not the revision's is refused, never guessed.

What is read: ``energy_accumulator`` — u32 in v1_0, u64 from v1_1 — in units of 2^-16 J
("15.259uJ (2^-16) units", the kernel's comment from v1_4 on; the firmware headers of the older
ASICs say the same resolution), and ``system_clock_counter`` (ns, the driver's boot-time stamp of
the reading). The driver fills the whole table with 0xFF before the firmware writes what it has,
so a field that reads all ones is "not available" (RDNA4 leaves the energy so).

The APU formats (v2_x, v3_0) carry power only, no energy. v1_9 (a self-describing attribute list,
the newest DKMS drivers on MI300) is not read yet: its encoding word changed width between the
patch's revisions and no table from hardware was at hand to settle it. Either is refused as
"no energy accumulator" / "unknown revision", and the source integrates hwmon power instead.
Offsets: computed with ctypes from the kernel structs (x86-64 ABI), checked in tests/test_amdgpu.py
against tables packed independently with ``struct``.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

# One count of energy_accumulator, in the meter's mJ: 1000 x 2^-16 (exact in binary floating point).
MJ_PER_COUNT = 1000.0 / 65536.0
HEADER = struct.Struct("=HBB")  # native byte order, as the driver writes it
# The driver reads at most a page less one byte into the file.
MAX_TABLE_BYTES = 4095


class BadTable(ValueError):
    """The table cannot be read as any known revision: the reason names what is wrong."""


@dataclass(frozen=True)
class Layout:
    """Where a revision keeps what is read; ``size`` is ``sizeof(struct gpu_metrics_vF_C)``."""

    size: int
    clock_at: int  # system_clock_counter, u64 ns
    energy_at: int | None = None  # energy_accumulator; None where the format has none (APUs)
    energy_bits: int = 64


LAYOUTS: dict[tuple[int, int], Layout] = {
    (1, 0): Layout(80, clock_at=8, energy_at=36, energy_bits=32),  # MI100 on kernels before v1_1
    (1, 1): Layout(96, clock_at=32, energy_at=24),
    (1, 2): Layout(104, clock_at=32, energy_at=24),
    (1, 3): Layout(120, clock_at=32, energy_at=24),  # Navi, RDNA2-4, MI100, MI200
    (1, 4): Layout(288, clock_at=32, energy_at=24),  # MI300 from here on
    (1, 5): Layout(360, clock_at=96, energy_at=88),
    (1, 6): Layout(1664, clock_at=24, energy_at=16),  # only this size: the 384-byte v1_6 was withdrawn
    (1, 7): Layout(2208, clock_at=32, energy_at=24),
    (1, 8): Layout(3872, clock_at=32, energy_at=24),
    (2, 0): Layout(120, clock_at=8), (2, 1): Layout(120, clock_at=32), (2, 2): Layout(128, clock_at=32),
    (2, 3): Layout(152, clock_at=32), (2, 4): Layout(168, clock_at=32), (3, 0): Layout(176, clock_at=104),
}


@dataclass(frozen=True)
class Metrics:
    """What one read of the table gives."""

    revision: str  # "1.8"
    energy_count: int | None  # raw energy_accumulator; None: not available (all ones, or no such field)
    energy_bits: int  # the field's width: 32 wraps at 2^32 counts
    clock_ns: int | None

    @property
    def energy_mj(self) -> float | None:
        return None if self.energy_count is None else self.energy_count * MJ_PER_COUNT


def parse(data: bytes) -> Metrics:
    """The table's energy and time stamp; raises BadTable for a table of no known layout."""
    if len(data) < HEADER.size:
        raise BadTable(f"truncated: {len(data)} bytes, not even a header")
    size, frev, crev = HEADER.unpack_from(data)
    layout = LAYOUTS.get((frev, crev))
    if layout is None:
        raise BadTable(f"unknown revision {frev}.{crev} ({len(data)} bytes)")
    if size != layout.size:
        raise BadTable(f"revision {frev}.{crev} of {size} bytes; its known layout has {layout.size}")
    if len(data) != size:
        what = "truncated" if len(data) < size else "longer than its header says"
        raise BadTable(f"{what}: {len(data)} bytes, the v{frev}_{crev} header says {size}")
    clock = _field(data, layout.clock_at, 64)
    if layout.energy_at is None:
        return Metrics(f"{frev}.{crev}", None, 0, clock)
    return Metrics(f"{frev}.{crev}", _field(data, layout.energy_at, layout.energy_bits), layout.energy_bits, clock)


def _field(data: bytes, offset: int, bits: int) -> int | None:
    value = int.from_bytes(data[offset:offset + bits // 8], sys.byteorder)
    return None if value == (1 << bits) - 1 else value

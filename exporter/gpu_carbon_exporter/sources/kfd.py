"""Which processes hold an AMD GPU through ROCm: the KFD's per-process VRAM in sysfs.

ROCm/HIP compute runs on user-mode queues of ``/dev/kfd``: it shows in no DRM client's engine time
(``attribution/fdinfo.py``; amdgpu_top#49), while the HIP process does open the render node, so its
DRM client prints no engine line and would read as "used nothing". The KFD tells who holds the GPU:

- ``sys/class/kfd/kfd/topology/nodes/N/gpu_id`` (0 for CPU nodes) and ``properties`` with
  ``domain`` and ``location_id`` (the PCI address: bus << 8 | device << 3 | function); an MI300 in
  a compute partition mode has a node (a gpu_id) per partition, all at the card's address;
- ``sys/class/kfd/kfd/proc/<pid>/vram_<gpu_id>``: the bytes of VRAM the process holds there.

It tells nothing of how busy each process keeps the GPU: such a process gets its VRAM and no share,
so the split of its GPU falls back to memory (docs/attribution.md), never to a zero engine time.
"""
from __future__ import annotations

import os
from pathlib import Path

KFD = "sys/class/kfd/kfd"


def _pci_of(properties: str) -> str | None:
    """``0000:bb:dd.f`` from a topology node's properties, or None (a CPU node)."""
    values = dict(line.split(None, 1) for line in properties.splitlines() if len(line.split(None, 1)) == 2)
    try:
        domain, location = int(values.get("domain", "0")), int(values["location_id"])
    except (KeyError, ValueError):
        return None
    return f"{domain:04x}:{location >> 8:02x}:{(location >> 3) & 0x1F:02x}.{location & 0x7:x}"


class KfdProcesses:
    """The ROCm processes of each AMD GPU, by PCI address; nothing (never an error) where there is no KFD."""

    def __init__(self, root: str | Path = "/") -> None:
        self.kfd = Path(root) / KFD
        self._gpu_ids: dict[str, tuple[str, ...]] | None = None

    def gpu_ids(self, pci: str) -> tuple[str, ...]:
        """The KFD gpu_ids of the card at ``pci`` (one per compute partition); read once."""
        if self._gpu_ids is None:
            found: dict[str, list[str]] = {}
            for node in sorted((self.kfd / "topology/nodes").glob("*")):
                try:
                    gpu_id = (node / "gpu_id").read_text().strip()
                    address = _pci_of((node / "properties").read_text())
                except OSError:
                    continue
                if gpu_id not in ("", "0") and address is not None:
                    found.setdefault(address, []).append(gpu_id)
            self._gpu_ids = {a: tuple(ids) for a, ids in found.items()}
        return self._gpu_ids.get(pci.lower(), ())

    def vram(self, pci: str) -> dict[int, int]:
        """pid -> VRAM bytes (over the card's partitions) of every process holding the card now."""
        ids = self.gpu_ids(pci)
        if not ids:
            return {}
        out: dict[int, int] = {}
        try:
            pids = [p for p in os.listdir(self.kfd / "proc") if p.isdigit()]
        except OSError:
            return out
        for pid in pids:
            for gpu_id in ids:
                try:
                    held = int((self.kfd / "proc" / pid / f"vram_{gpu_id}").read_text().strip())
                except (OSError, ValueError):  # gone since the listing, or not on this partition
                    continue
                out[int(pid)] = out.get(int(pid), 0) + held
        return out

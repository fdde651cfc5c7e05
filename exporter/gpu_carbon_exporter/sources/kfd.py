"""Which processes hold an AMD GPU through ROCm: the KFD's per-process VRAM in sysfs.

ROCm/HIP compute runs on user-mode queues of ``/dev/kfd``: it shows in no DRM client's engine time
(``attribution/fdinfo.py``; amdgpu_top#49), while the HIP process does open the render node, so its
DRM client prints no engine line and would read as "used nothing". The KFD tells who holds the GPU:

- ``sys/class/kfd/kfd/topology/nodes/N/gpu_id`` (0 for CPU nodes) and ``properties`` with
  ``domain`` and ``location_id`` (the PCI address: bus << 8 | device << 3 | function) and
  ``drm_render_minor``; an MI300 in a compute partition mode has a node (a gpu_id) per partition,
  all at the card's address, each with its partition's render node (the DRM client stats map a
  partition's render node, which is no PCI device, to its card through this: ``gpu_nodes``);
- ``sys/class/kfd/kfd/proc/<pid>/vram_<gpu_id>``: the bytes of VRAM the process holds there.

It tells nothing of how busy each process keeps the GPU: such a process gets its VRAM and no share,
so the split of its GPU falls back to memory (docs/attribution.md), never to a zero engine time.
"""
from __future__ import annotations

import os
from pathlib import Path

KFD = "sys/class/kfd/kfd"


def _properties(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in text.splitlines() if len(line.split(None, 1)) == 2)


def _pci_of(values: dict[str, str]) -> str | None:
    """``0000:bb:dd.f`` from a topology node's properties, or None (a CPU node)."""
    try:
        domain, location = int(values.get("domain", "0")), int(values["location_id"])
    except (KeyError, ValueError):
        return None
    return f"{domain:04x}:{location >> 8:02x}:{(location >> 3) & 0x1F:02x}.{location & 0x7:x}"


def gpu_nodes(root: str | Path = "/") -> list[tuple[str, str, int | None]]:
    """(gpu_id, PCI address, render minor) of every GPU node of the KFD topology (one per compute
    partition: an MI300 in CPX has eight at one address, each with the minor of its own render node,
    ``drm_render_minor``); empty where there is no KFD. A node that cannot be read is left out."""
    found = []
    for node in sorted((Path(root) / KFD / "topology/nodes").glob("*")):
        try:
            gpu_id = (node / "gpu_id").read_text().strip()
            values = _properties((node / "properties").read_text())
        except OSError:
            continue
        address = _pci_of(values)
        if gpu_id in ("", "0") or address is None:
            continue
        minor = values.get("drm_render_minor", "").strip()
        found.append((gpu_id, address, int(minor) if minor.isdigit() else None))
    return found


class KfdProcesses:
    """The ROCm processes of each AMD GPU, by PCI address; nothing (never an error) where there is no KFD."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root, self.kfd = root, Path(root) / KFD
        self._gpu_ids: dict[str, tuple[str, ...]] | None = None

    def gpu_ids(self, pci: str) -> tuple[str, ...]:
        """The KFD gpu_ids of the card at ``pci`` (one per compute partition); read once."""
        if self._gpu_ids is None:
            found: dict[str, list[str]] = {}
            for gpu_id, address, _ in gpu_nodes(self.root):
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

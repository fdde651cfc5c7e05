"""Persisted counter state that survives crashes without ever going backwards.

Three files hold generations of the same state, each with a sequence number and a CRC:

- ``PATH``: durable. Written every ``persist_interval_seconds`` and on exit by the
  classic temp file + fsync + rename + fsync of the directory; survives power loss.
- ``PATH.live-a`` and ``PATH.live-b``: crash checkpoints. Rewritten in place after every
  sample, before the new values are exposed, with one ``pwrite`` and no fsync: a killed
  process loses nothing (the page cache keeps the write), and the kernel flushes them at
  its own writeback cadence, so flash storage is not written once per sample. The slot
  written is never the one holding the newest complete generation, so a torn write (a
  power loss, a kill inside a multi-page write) still leaves the previous one.

``load`` returns the newest generation whose CRC checks out. A file at one of these paths
that is not ours is never touched: ``StateStore`` refuses it with ``StateError``.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FORMAT = 2
MAGIC = b"gpu-carbon-exporter-state"
LEGACY_PREFIX = b'{"saved_at":'  # format 1 (plain JSON), still read
SLOTS = ("live-a", "live-b")


class StateError(ValueError):
    """The state path cannot be used (it holds a file that is not ours)."""


def _encode(data: dict[str, Any], seq: int) -> bytes:
    body = json.dumps({**data, "format": FORMAT}, separators=(",", ":"), allow_nan=False).encode()
    return b"%s %d %d %08x %d\n" % (MAGIC, FORMAT, seq, zlib.crc32(body), len(body)) + body + b"\n"


def _decode(raw: bytes) -> tuple[int, dict[str, Any]]:
    """(sequence, state) of one file's bytes; raises ValueError when damaged."""
    if raw.startswith(LEGACY_PREFIX):
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != 1:
            raise ValueError("legacy state without format 1")
        return 0, data
    header, _, rest = raw.partition(b"\n")
    parts = header.split()
    if len(parts) != 5 or parts[0] != MAGIC or parts[1] != b"%d" % FORMAT:
        raise ValueError(f"bad header (want {MAGIC.decode()} {FORMAT})")
    seq, crc, length = int(parts[2]), int(parts[3], 16), int(parts[4])
    body = rest[:length]
    if len(body) != length or zlib.crc32(body) != crc:
        raise ValueError("checksum mismatch (a torn or damaged write)")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("body is not a JSON object")
    return seq, data


def read_file(path: str | Path) -> dict[str, Any]:
    """One state file's content (for tools and tests); raises ValueError when damaged."""
    return _decode(Path(path).read_bytes())[1]


def _is_ours(raw: bytes) -> bool:
    return not raw.strip() or raw.startswith(MAGIC + b" ") or raw.startswith(LEGACY_PREFIX)


class StateStore:
    """The durable file and its two crash checkpoints. Paths are checked at construction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seq = 0
        self._fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._newest_slot: str | None = None
        for p in self.paths():
            self._check_ours(p)

    def check_writable(self) -> None:
        """Raise StateError unless the state can be written where it is configured to be."""
        parent = self.path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise StateError(f"{self.path}: cannot write the state there ({parent} is not a writable directory)")

    def paths(self) -> list[Path]:
        return [self.path] + [self._slot_path(s) for s in SLOTS]

    def _slot_path(self, slot: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{slot}")

    @staticmethod
    def _check_ours(p: Path) -> None:
        if not os.path.lexists(p):
            return
        if p.is_symlink() or not p.is_file():
            raise StateError(f"{p}: exists and is not a regular file; refusing to use it as the state file")
        try:
            with open(p, "rb") as fh:
                head = fh.read(64)
        except OSError as err:
            raise StateError(f"{p}: cannot read: {err.strerror}") from err
        if not _is_ours(head):
            raise StateError(f"{p}: exists and is not a gpu-carbon-exporter state file; refusing to "
                             "overwrite it (check state.path / --state.path)")

    def load(self) -> dict[str, Any]:
        """The newest intact generation, or {} when there is none (a damaged durable file is moved aside)."""
        found: list[tuple[int, int, str, dict[str, Any]]] = []
        for rank, p in enumerate(self.paths()):
            try:
                raw = p.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as err:
                log.warning("state file %s unreadable (%s); ignoring it", p, err)
                continue
            if not raw.strip():
                continue
            try:
                seq, data = _decode(raw)
            except (ValueError, UnicodeDecodeError) as err:
                if p == self.path:
                    aside = self.set_aside(raw, f"damaged ({err})")
                    log.warning("state file %s is damaged (%s); moved a copy to %s", p, err, aside)
                else:
                    log.info("crash checkpoint %s incomplete (%s); using an older generation", p, err)
                continue
            found.append((seq, -rank, p.name, data))
        if not found:
            return {}
        seq, _, name, data = max(found, key=lambda f: (f[0], f[1]))
        self._seq = max(f[0] for f in found)
        self._newest_slot = next((s for s in SLOTS if name.endswith(s)), None)
        log.info("counter state loaded from %s (generation %d)", self.path.with_name(name), seq)
        return data

    def set_aside(self, raw: bytes, why: str) -> Path:
        """Keep a copy of damaged state beside the state file, so nothing is lost."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            aside.write_bytes(raw)
        except OSError as err:
            log.error("could not keep a copy of %s state at %s: %s", why, aside, err)
        return aside

    def save(self, data: dict[str, Any]) -> None:
        """Durable write of a new generation. Raises OSError on failure."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        payload = _encode(data, self._seq)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._newest_slot = None

    def checkpoint(self, data: dict[str, Any]) -> None:
        """Crash checkpoint: one in-place ``pwrite`` of a new generation, no fsync. Raises OSError."""
        slot = SLOTS[1] if self._newest_slot == SLOTS[0] else SLOTS[0]
        self._seq += 1
        payload = _encode(data, self._seq)
        fd = self._fds.get(slot)
        if fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._fds[slot] = os.open(self._slot_path(slot), os.O_RDWR | os.O_CREAT, 0o600)
            self._sizes[slot] = os.fstat(fd).st_size
        # Pad to the previous size instead of truncating: one write, never a moment with a short file.
        padded = payload + b" " * max(self._sizes[slot] - len(payload), 0)
        written = os.pwrite(fd, padded, 0)
        if written != len(padded):
            raise OSError(f"short write to {self._slot_path(slot)}")
        self._sizes[slot] = max(self._sizes[slot], len(padded))
        self._newest_slot = slot

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

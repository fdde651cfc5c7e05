"""Persisted counter state that survives crashes without ever going backwards.

Three files hold generations of the same state, each with a sequence number and a CRC:

- ``PATH``: durable. Written every ``persist_interval_seconds`` and on exit by the
  classic temp file + fsync + rename + fsync of the directory; survives power loss.
- ``PATH.live-a`` and ``PATH.live-b``: crash checkpoints. Reserved on disk at start-up
  (``prepare``) and rewritten in place after every sample, before the new values are
  exposed, with one ``pwrite`` and no fsync: a killed process loses nothing (the page cache
  keeps the write), the kernel flushes them at its own writeback cadence, so flash storage
  is not written once per sample, and on ext4/xfs a full disk does not stop them (their
  blocks are already allocated; copy-on-write file systems such as btrfs and ZFS need new
  blocks for every rewrite, and there the meter holds the exposed counters instead). The slot
  written is never the one holding the newest complete generation, so a torn write (a power
  loss, a kill inside a multi-page write) still leaves the previous one.

``load`` returns the newest generation whose CRC checks out; a damaged file of ours (a torn
write, zero pages after a power loss, garbage, one too large or too deeply nested to parse
safely) is moved aside as ``PATH.corrupt-<unix time>[-N]`` and start-up goes on. A file at
one of these paths that is clearly someone else's is never touched: ``StateStore`` refuses
it with ``StateError``.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
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
STATE_MODE = 0o600  # every state file, and every copy set aside: counters and job names are not for all
# Bounds checked before decoding: our own state is a few levels deep and far below these sizes
# (about 1 KiB per device or job), so anything beyond is damage, and json.loads never recurses deeply.
MAX_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 32
SLOT_MIN_BYTES = 64 * 1024  # each checkpoint slot reserves at least this, and twice the state's size
BLANK = b"\0 \t\r\n"  # what an unwritten or zeroed page reads as
# Formats a mistyped path may name (an executable, an archive, a database): clearly not ours.
FOREIGN_SIGNATURES = (b"\x7fELF", b"\x1f\x8b", b"PK\x03\x04", b"SQLite format 3\0", b"\x89PNG", b"%PDF",
                      b"\xfd7zXZ\0", b"BZh", b"\x28\xb5\x2f\xfd")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")


class StateError(ValueError):
    """The state path cannot be used (it holds a file that is not ours, or no space can be reserved)."""


def _encode(data: dict[str, Any], seq: int) -> bytes:
    body = json.dumps({**data, "format": FORMAT}, separators=(",", ":"), allow_nan=False).encode()
    return b"%s %d %d %08x %d\n" % (MAGIC, FORMAT, seq, zlib.crc32(body), len(body)) + body + b"\n"


def _check_depth(raw: bytes) -> None:
    """Raise ValueError when JSON nests deeper than MAX_DEPTH (json.loads would recurse that deep)."""
    depth = 0
    for m in _BRACKETS.finditer(_STRINGS.sub(b'""', raw)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
        else:
            depth -= 1


def _json(raw: bytes) -> Any:
    if len(raw) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    _check_depth(raw)
    return json.loads(raw)


def _decode(raw: bytes) -> tuple[int, dict[str, Any]]:
    """(sequence, state) of one file's bytes; raises ValueError when damaged."""
    if raw.startswith(LEGACY_PREFIX):
        data = _json(raw)
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
    data = _json(body)
    if not isinstance(data, dict):
        raise ValueError("body is not a JSON object")
    return seq, data


def read_file(path: str | Path) -> dict[str, Any]:
    """One state file's content (for tools and tests); raises ValueError when damaged."""
    return _decode(Path(path).read_bytes())[1]


def _blank(raw: bytes) -> bool:
    return not raw.strip(BLANK)


def _is_text(head: bytes) -> bool:
    """Printable UTF-8 text (a character cut at the end of the head still counts)."""
    try:
        text = head.decode()
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:
            return False
        text = head[:err.start].decode()
    return all(c.isprintable() or c in "\t\r\n\f\v" for c in text)


def _foreign(head: bytes) -> bool:
    """Whether a file's first bytes are clearly someone else's: a known format, or text that is not
    ours. Our header or its beginning (a write cut short), zero pages a power loss left and binary
    garbage are taken for our own damaged state: they are moved aside, never destroyed."""
    rest = head.lstrip(BLANK)
    if not rest:
        return False
    if any(sig.startswith(rest[:len(sig)]) for sig in (MAGIC + b" ", LEGACY_PREFIX)):
        return False
    if head.startswith(FOREIGN_SIGNATURES):
        return True
    return b"\0" not in rest and _is_text(rest)


def _slot_size(payload_bytes: int) -> int:
    return max(SLOT_MIN_BYTES, -(-2 * payload_bytes // 4096) * 4096)


def _reserve(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of the file's blocks now (contents kept), so later in-place writes need none."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        have = os.fstat(fd).st_size  # no fallocate on this file system: write the zeros ourselves
        if have < size:
            os.pwrite(fd, bytes(size - have), have)


class StateStore:
    """The durable file and its two crash checkpoints. Paths are checked at construction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seq = 0
        self._fds: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._newest_slot: str | None = None
        self.damaged_files = 0  # damaged files of ours moved aside by load()
        # Our checkpoint slots beside the durable file make it ours whatever it holds now.
        slots_beside = any(os.path.isfile(p) and not os.path.islink(p) for p in self.paths()[1:])
        for p in self.paths():
            self._check_ours(p, by_name=p != self.path or slots_beside)

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
    def _check_ours(p: Path, by_name: bool) -> None:
        """Refuse what is not a regular file, or (unless our name or slots make it ours) clearly someone else's."""
        if not os.path.lexists(p):
            return
        if p.is_symlink() or not p.is_file():
            raise StateError(f"{p}: exists and is not a regular file; refusing to use it as the state file")
        if by_name:
            return
        try:
            with open(p, "rb") as fh:
                head = fh.read(4096)
        except OSError as err:
            raise StateError(f"{p}: cannot read: {err.strerror}") from err
        if _foreign(head):
            raise StateError(f"{p}: exists and is not a gpu-carbon-exporter state file; refusing to "
                             "overwrite it (check state.path / --state.path)")

    def load(self) -> dict[str, Any]:
        """The newest intact generation, or {} when there is none (damaged files are moved aside)."""
        found: list[tuple[int, int, str, dict[str, Any]]] = []
        for rank, p in enumerate(self.paths()):
            got = self._read(p)
            if got is not None:
                found.append((got[0], -rank, p.name, got[1]))
        if not found:
            return {}
        seq, _, name, data = max(found, key=lambda f: (f[0], f[1]))
        self._seq = max(f[0] for f in found)
        self._newest_slot = next((s for s in SLOTS if name.endswith(s)), None)
        log.info("counter state loaded from %s (generation %d)", self.path.with_name(name), seq)
        return data

    def _read(self, p: Path) -> tuple[int, dict[str, Any]] | None:
        """One file's generation; None when absent, blank (never written, zeroed) or damaged (moved aside)."""
        try:
            with open(p, "rb") as fh:
                raw = fh.read(MAX_BYTES + 1)  # bounded: a huge file is damage, not something to load
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("state file %s unreadable (%s); ignoring it", p, err)
            return None
        if _blank(raw):
            return None
        try:
            if len(raw) > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES} bytes")
            return _decode(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            aside = self._move_aside(p)
            self.damaged_files += 1
            log.warning("state file %s is damaged (%s); moved it to %s and starting from the other "
                        "generations", p, err, aside)
            return None

    def _reserve_name(self) -> tuple[Path, int]:
        """A new, unique ``PATH.corrupt-<unix time>[-N]``, created empty with the state's mode."""
        stamp = int(time.time())
        for n in range(10_000):
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}" + (f"-{n}" if n else ""))
            try:
                return aside, os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, STATE_MODE)
            except FileExistsError:
                continue
        raise OSError(errno.EEXIST, f"no free name for {self.path.name}.corrupt-{stamp}")

    def _move_aside(self, p: Path) -> Path | str:
        """Move a damaged file of ours out of the way (a rename: no space needed, nothing lost)."""
        try:
            aside, fd = self._reserve_name()
            os.close(fd)
            os.replace(p, aside)
            os.chmod(aside, STATE_MODE)
        except OSError as err:
            log.error("could not move damaged state %s aside: %s", p, err)
            return "nowhere (left in place)"
        return aside

    def set_aside(self, raw: bytes, why: str) -> Path:
        """Keep a copy of damaged state beside the state file, so nothing is lost."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-?")
        try:
            aside, fd = self._reserve_name()
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
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

    def prepare(self, data: dict[str, Any]) -> None:
        """Reserve both checkpoint slots on disk for twice this state's size (at least SLOT_MIN_BYTES),
        so that a disk filling up later cannot stop a checkpoint. Raises StateError when even that fails."""
        size = _slot_size(len(_encode(data, self._seq + 1)))
        for slot in SLOTS:
            try:
                self._reserve_slot(slot, size)
            except OSError as err:
                raise StateError(f"{self._slot_path(slot)}: cannot reserve {size} bytes for the crash "
                                 f"checkpoint ({err.strerror or err}); free some space there or point "
                                 "state.path elsewhere") from err

    def _reserve_slot(self, slot: str, size: int) -> int:
        fd = self._fds.get(slot)
        if fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._fds[slot] = os.open(self._slot_path(slot), os.O_RDWR | os.O_CREAT, STATE_MODE)
            self._reserved[slot] = 0
        if size > self._reserved[slot]:
            _reserve(fd, size)
            os.fsync(fd)  # the reserved size survives a power loss too
            self._reserved[slot] = size
        return fd

    def checkpoint(self, data: dict[str, Any]) -> None:
        """Crash checkpoint: one in-place ``pwrite`` of a new generation, no fsync. Raises OSError.

        A failure leaves the slot written to as it was, and the next checkpoint goes to the same slot:
        the other one holds the newest complete generation."""
        slot = SLOTS[1] if self._newest_slot == SLOTS[0] else SLOTS[0]
        payload = _encode(data, self._seq + 1)
        fd = self._reserve_slot(slot, _slot_size(len(payload)) if len(payload) > self._reserved.get(slot, 0) else 0)
        # Within the reserved blocks: no allocation, and the file never shrinks (its tail is ignored).
        written = os.pwrite(fd, payload, 0)
        if written != len(payload):
            raise OSError(errno.EIO, f"short write to {self._slot_path(slot)}")
        self._seq += 1
        self._newest_slot = slot

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._reserved.clear()

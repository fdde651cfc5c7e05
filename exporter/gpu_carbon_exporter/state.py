"""Persisted counter state: atomic writes, corrupt files moved aside."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FORMAT = 1


class StateStore:
    """A JSON state file written atomically (temp file, fsync, rename, fsync dir)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        """The saved state, or {} when there is none or it is corrupt (then moved aside)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as err:
            log.warning("state file %s unreadable (%s); starting counters from zero", self.path, err)
            return {}
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != FORMAT or \
                    not isinstance(data.get("devices", {}), dict):
                raise ValueError(f"unexpected structure or format (want format {FORMAT})")
            return data
        except (ValueError, UnicodeDecodeError) as err:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = self.path
            log.warning("state file %s is corrupt (%s); moved it to %s, counters start from zero",
                        self.path, err, aside)
            return {}

    def save(self, data: dict[str, Any]) -> None:
        """Write ``data`` atomically. Raises OSError on failure."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({**data, "format": FORMAT}, separators=(",", ":")).encode()
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

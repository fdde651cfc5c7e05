"""Units of work a job declares: one small file per job, ``<work_dir>/<job id>``, holding one line
``COUNT UNIT`` (``1200000 tokens``), which the job rewrites as it goes. The prolog creates it owned
by the job's user in a directory only root may write (deploy/slurm/prolog.sh), so a job can declare
only its own work. Read at most every few seconds, never following links, at most 4 KiB; a count
never goes down (the larger one is kept), and a bad file is logged once and ignored."""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)
UNIT = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_BYTES = 4096
MAX_COUNT = 1e18


def file_name(job_id: str) -> str:
    """The file a job writes: its id, with ``/`` (Kubernetes ``namespace/pod``) as ``_``."""
    return job_id.replace("/", "_")


def parse(text: str) -> tuple[float, str]:
    """``COUNT UNIT`` on the first line; raises ValueError with the reason."""
    parts = text.strip().splitlines()[0].split() if text.strip() else []
    if len(parts) != 2:
        raise ValueError("expected one line 'COUNT UNIT', e.g. '1200000 tokens'")
    count = float(parts[0])
    if not math.isfinite(count) or not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be a number in [0, {MAX_COUNT:g}], got {parts[0][:20]!r}")
    if not UNIT.fullmatch(parts[1]):
        raise ValueError(f"unit must be lower-case letters, digits or _ (at most 32), got {parts[1][:40]!r}")
    return count, parts[1]


class WorkReader:
    """Reads the work files of the jobs it is asked about."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self._complained: set[str] = set()

    def read(self, job_id: str) -> tuple[float, str] | None:
        path = self.directory / file_name(job_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as err:
            self._complain(job_id, f"{path}: {err.strerror or err}")
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                if not os.stat(f.fileno()).st_mode & 0o100000:  # S_IFREG: a FIFO or device would block or lie
                    raise ValueError("not a regular file")
                data = f.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES} bytes")
            text = data.decode("utf-8", errors="replace")
            return parse(text) if text.strip() else None  # created by the prolog, not yet written
        except (OSError, ValueError) as err:
            self._complain(job_id, f"{path}: {err}")
            return None

    def _complain(self, job_id: str, message: str) -> None:
        if job_id not in self._complained:
            self._complained.add(job_id)
            log.warning("units of work ignored: %s", message)

"""Fast renderers of the Prometheus text format (0.0.4) and OpenMetrics 1.0, and a cache.

``prometheus_client``'s encoders validate and escape every label *name* of every sample,
which is most of a scrape's CPU time here; our label names are fixed and valid, so these
renderers escape label values and help text only. Their output is byte-for-byte that of
``prometheus_client`` (tests check both formats).

Prometheus 2.x and 3.x ask for OpenMetrics first, so both formats take the fast path.
``Exposition`` renders the bulk of a scrape once per meter snapshot (snapshots change once
per sampling interval) and keeps it, plain and gzipped, for every scraper; only the
health families, whose ages are computed at scrape time, are rendered per scrape. A gzip
body stays one gzip member (curl reads only a first member): the bulk is compressed once and
sync-flushed, which ends its deflate data on a byte boundary, and each scrape appends its tail
as deflate data of its own (stored blocks: ``_TAIL_LEVEL``), then the member's trailer (the
CRC-32 continued from the bulk's, and the length). Continuing a copy of the bulk's compressor
instead cost about 65 us a scrape, most of a cached scrape's rendering: the copy duplicates the
compressor's whole state (about 270 KB).
"""
from __future__ import annotations

import struct
import threading
import zlib
from typing import Iterable

from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_SUFFIX_TYPES = {"counter": ("_total", "counter"), "info": ("_info", "gauge"), "stateset": ("", "gauge"),
                 "gaugehistogram": ("", "histogram"), "unknown": ("", "untyped")}
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The tail goes into the gzip member as stored (uncompressed) deflate blocks: it is a couple of
# kilobytes, and compressing it cost about 30 us a scrape in the server (level 1, a small window),
# a tenth of a cached scrape's CPU, to save about 1.2 KB on the wire.
# Raw deflate (no header of its own), the smallest window and memory level: nothing is matched, and
# a compressor with the default memory level took 14 us to set up against 2 us.
_TAIL_LEVEL, _TAIL_WBITS, _TAIL_MEMLEVEL = 0, -9, 1
OPENMETRICS_EOF = "# EOF\n"


def _value(v: str) -> str:
    if "\\" not in v and "\n" not in v and '"' not in v:  # almost every value: nothing to escape
        return v
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample_line(s: Sample) -> str:
    if s.labels:
        labels = ",".join(f'{k}="{_value(v)}"' for k, v in sorted(s.labels.items()))
        return f"{s.name}{{{labels}}} {floatToGoString(s.value)}\n"
    return f"{s.name} {floatToGoString(s.value)}\n"


def render_families(families: Iterable, openmetrics: bool = False) -> str:
    """The families in the text format or (without its ``# EOF``) OpenMetrics."""
    out: list[str] = []
    for metric in families:
        if openmetrics:
            name, mtype = metric.name, metric.type
            doc = _value(metric.documentation)
        else:
            suffix, mtype = _SUFFIX_TYPES.get(metric.type, ("", metric.type))
            name = metric.name + suffix
            doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {mtype}\n")
        if openmetrics and metric.unit:
            out.append(f"# UNIT {name} {metric.unit}\n")
        out.extend(_sample_line(s) for s in metric.samples)
    return "".join(out)


def render_text(registry: Collector) -> bytes:
    return render_families(registry.collect()).encode("utf-8")


class Exposition:
    """Bodies for /metrics from a ``SnapshotCollector``: bulk cached per snapshot, health per scrape."""

    def __init__(self, collector: "object", gzip_level: int = 1) -> None:
        self.collector, self.gzip_level = collector, gzip_level
        self._lock = threading.Lock()
        self._snap: object | None = None  # held, so its id is never reused while cached
        self._plain: dict[bool, bytes] = {}
        self._packed: dict[bool, tuple[bytes, int, int]] = {}

    def body(self, openmetrics: bool, compress: bool) -> bytes:
        snap = self.collector.get_snapshot()
        with self._lock:  # the bulk first: the live tail names the sections it rendered
            self._refresh(snap)
            if compress:
                packed, crc, size = self._gzip_bulk(snap, openmetrics)
            else:
                plain = self._bulk(snap, openmetrics)
        tail = render_families(self.collector.collect_live(snap), openmetrics)
        tail_bytes = (tail + (OPENMETRICS_EOF if openmetrics else "")).encode("utf-8")
        if not compress:
            return plain + tail_bytes
        deflate = zlib.compressobj(_TAIL_LEVEL, zlib.DEFLATED, _TAIL_WBITS, _TAIL_MEMLEVEL)
        trailer = struct.pack("<II", zlib.crc32(tail_bytes, crc), (size + len(tail_bytes)) & 0xFFFFFFFF)
        return b"".join((packed, deflate.compress(tail_bytes), deflate.flush(), trailer))

    def _refresh(self, snap: object) -> None:
        if self._snap is not snap:
            self._snap, self._plain, self._packed = snap, {}, {}

    def _bulk(self, snap: object, openmetrics: bool) -> bytes:
        if openmetrics not in self._plain:
            self._plain[openmetrics] = render_families(self.collector.collect_cached(snap), openmetrics).encode()
        return self._plain[openmetrics]

    def _gzip_bulk(self, snap: object, openmetrics: bool) -> tuple[bytes, int, int]:
        """The bulk as the start of a gzip member (header and sync-flushed deflate data, no trailer),
        with its CRC-32 and length, which the member's trailer continues."""
        if openmetrics not in self._packed:
            bulk = self._bulk(snap, openmetrics)
            state = zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)  # wbits 31: a gzip header
            packed = state.compress(bulk) + state.flush(zlib.Z_SYNC_FLUSH)
            self._packed[openmetrics] = (packed, zlib.crc32(bulk), len(bulk))
        return self._packed[openmetrics]

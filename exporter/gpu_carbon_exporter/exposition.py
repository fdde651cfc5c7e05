"""A fast renderer of the Prometheus text format (0.0.4) for our own collectors.

``prometheus_client.generate_latest`` validates and escapes every label *name* of every
sample, which is most of a scrape's CPU time here; our label names are fixed and valid,
so this renderer escapes label values and help text only. Its output is byte-for-byte
the same as ``generate_latest`` (a test checks it); OpenMetrics requests still go
through prometheus_client.
"""
from __future__ import annotations

from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_SUFFIX_TYPES = {"counter": ("_total", "counter"), "info": ("_info", "gauge"), "stateset": ("", "gauge"),
                 "gaugehistogram": ("", "histogram"), "unknown": ("", "untyped")}


def _value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render_text(registry: Collector) -> bytes:
    out: list[str] = []
    for metric in registry.collect():
        suffix, mtype = _SUFFIX_TYPES.get(metric.type, ("", metric.type))
        name = metric.name + suffix
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {mtype}\n")
        for s in metric.samples:
            if s.labels:
                labels = ",".join(f'{k}="{_value(v)}"' for k, v in sorted(s.labels.items()))
                out.append(f"{s.name}{{{labels}}} {floatToGoString(s.value)}\n")
            else:
                out.append(f"{s.name} {floatToGoString(s.value)}\n")
    return "".join(out).encode("utf-8")

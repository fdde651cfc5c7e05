"""A report from one node's exporter ``/metrics`` (no Prometheus): the job's counters as they
stand, while the job is still exposed there (``attribution.linger_seconds`` after it ends).
Totals and the job's span (its duration and mean power), but no history: no peak, power over time, gaps
or plots."""
from __future__ import annotations

import time
from urllib.parse import urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

from .. import __version__
from ..names import (
    GRID_INTENSITY_SOURCE_INFO, JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL, JOB_EMISSIONS_GRAMS_TOTAL, JOB_END_TIME_SECONDS,
    JOB_ENERGY_JOULES_TOTAL, JOB_GPU_INFO, JOB_GPU_SECONDS_TOTAL, JOB_INFO, JOB_START_TIME_SECONDS,
    JOB_WATER_LITERS_TOTAL, JOB_WORK_UNITS_TOTAL, PUE_RATIO,
)
from .collect import OWNER
from .model import GpuRow, IntensitySource, JobReport, NodeTotals
from .prom import ReportError

FIELDS = {(JOB_ENERGY_JOULES_TOTAL, "allocated"): "energy_j",
          (JOB_ENERGY_JOULES_TOTAL, "active"): "active_j",
          (JOB_EMISSIONS_GRAMS_TOTAL, "allocated"): "grams",
          (JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL, None): "embodied_g",
          (JOB_WATER_LITERS_TOTAL, None): "water_l",
          (JOB_GPU_SECONDS_TOTAL, None): "gpu_seconds"}


def from_exporter(url: str, job_id: str, timeout: float = 30.0) -> JobReport:
    where = f"the exporter at {url}"
    try:
        r = requests.get(url if url.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics",
                         timeout=timeout, headers={"Accept": "text/plain;version=0.0.4"})
        r.raise_for_status()
        families = list(text_string_to_metric_families(r.text))
    except requests.Timeout:
        raise ReportError(f"{where} did not answer within {timeout:g} s", 3) from None
    except requests.RequestException as err:
        raise ReportError(f"{where} is not reachable: {str(err)[:200]}", 3) from None
    except ValueError as err:
        raise ReportError(f"{where} answered something that is not a Prometheus exposition: {err!s:.120}", 3) from None
    node = NodeTotals(urlsplit(url).hostname or "")
    owner, scheduler, gpus, found = {}, "", [], False
    span: dict[str, float] = {}  # the job's start and end on this node (docs/metrics.md)
    sources, pue = [], None
    for family in families:
        for s in family.samples:
            labels = s.labels
            if s.name == PUE_RATIO:
                pue = s.value
            if s.name == GRID_INTENSITY_SOURCE_INFO:
                sources.append(IntensitySource(labels.get("zone", ""), labels.get("source", ""),
                                               labels.get("signal", ""), 1.0))
            if labels.get("job_id") != job_id:
                continue
            found = True
            scheduler = labels.get("scheduler", scheduler)
            if s.name == JOB_INFO:
                owner = {k: labels[k] for k in OWNER if labels.get(k)}
            elif s.name == JOB_GPU_INFO:
                gpus.append(GpuRow(node.node, labels.get("gpu", ""), vendor=labels.get("vendor", "")))
            elif s.name in (JOB_START_TIME_SECONDS, JOB_END_TIME_SECONDS):
                span["start" if s.name == JOB_START_TIME_SECONDS else "end"] = s.value
            elif s.name == JOB_WORK_UNITS_TOTAL:
                node.work[labels.get("unit", "units")] = s.value
            else:
                field = FIELDS.get((s.name, labels.get("view")))
                if field:
                    setattr(node, field, s.value)
    if not found:
        raise ReportError(f"no job {job_id!r} at {where} (a finished job stays there for attribution.linger_seconds; "
                          "use --prometheus for older jobs)")
    now = time.time()
    start, end = (span["start"], span["end"]) if len(span) == 2 else (now, now)  # an older exporter: no span
    return JobReport(job_id=job_id, cluster="", scheduler=scheduler, owner=owner, start=start, end=end, partial=True,
                     partial_reason="may still be running (one exporter's totals, without history, cannot tell)",
                     source=f"{url} (one node's exporter: totals only, no history)", nodes=[node],
                     gpus=gpus, gaps=[], intensity_sources=sources, fallback_share=None, pue=pue,
                     mean_utilization=None, peak_power_w=None, methods=[], work=dict(node.work),
                     work_source="exporter" if node.work else "", version=__version__)

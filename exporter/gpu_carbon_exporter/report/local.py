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
from .collect import OWNER
from .model import GpuRow, IntensitySource, JobReport, NodeTotals
from .prom import ReportError

FIELDS = {("gpu_carbon_job_energy_joules_total", "allocated"): "energy_j",
          ("gpu_carbon_job_energy_joules_total", "active"): "active_j",
          ("gpu_carbon_job_emissions_grams_total", "allocated"): "grams",
          ("gpu_carbon_job_embodied_emissions_grams_total", None): "embodied_g",
          ("gpu_carbon_job_water_liters_total", None): "water_l",
          ("gpu_carbon_job_gpu_seconds_total", None): "gpu_seconds"}


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
            if s.name == "gpu_carbon_pue_ratio":
                pue = s.value
            if s.name == "gpu_carbon_grid_intensity_source_info":
                sources.append(IntensitySource(labels.get("zone", ""), labels.get("source", ""),
                                               labels.get("signal", ""), 1.0))
            if labels.get("job_id") != job_id:
                continue
            found = True
            scheduler = labels.get("scheduler", scheduler)
            if s.name == "gpu_carbon_job_info":
                owner = {k: labels[k] for k in OWNER if labels.get(k)}
            elif s.name == "gpu_carbon_job_gpu_info":
                gpus.append(GpuRow(node.node, labels.get("gpu", "")))
            elif s.name in ("gpu_carbon_job_start_time_seconds", "gpu_carbon_job_end_time_seconds"):
                span[s.name.split("_")[3]] = s.value
            elif s.name == "gpu_carbon_job_work_units_total":
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

"""Per-job carbon reports: ``gpu-carbon-exporter report JOB_ID [--compare ...]`` (docs/report.md)."""
from .collect import collect
from .model import JobReport
from .prom import Prometheus, ReportError

__all__ = ["JobReport", "Prometheus", "ReportError", "collect"]

"""The generator's configuration: windows, intervals, thresholds and impact weights.

Defaults suit a production fleet scraped every 15 s; the ``settings`` block of a budgets
file (docs/rules.md) overrides any of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

NODE = ("cluster", "site", "fleet", "node")  # the target labels (docs/rules.md)
SITE = ("cluster", "site", "fleet")
FLEET = ("fleet",)
JOB = ("cluster", "scheduler", "job_id")
JOB_INFO_LABELS = ("user", "team", "account", "namespace")

# How far before a window's (or tile's) start the exact windows look for a counter's value there:
# a scrape gap longer than this across the start counts a job from 0 (docs/rules.md, "Windows").
GAP_LOOKBACK = "1h"
DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> int:
    """Seconds in a Prometheus duration such as ``5m`` or ``30d`` (one unit only)."""
    return int(duration[:-1]) * DURATION_SECONDS[duration[-1]]


def lookback(window: str) -> str:
    """How far before ``window``'s start its exact growth looks for the counters' values: the window
    itself up to an hour (so it costs at most one more read of the window)."""
    return window if seconds(window) < seconds(GAP_LOOKBACK) else GAP_LOOKBACK


@dataclass(frozen=True)
class ImpactWeights:
    """Weights of the composite impact score Σ wᵢ·eᵢ: a convention, not a standard (docs/rules.md)."""

    energy_kwh: float = 1.0
    operational_kg: float = 1.0
    embodied_kg: float = 1.0
    water_liters: float = 0.01


@dataclass(frozen=True)
class Settings:
    """What the rules are built with; every field can be set in a budgets file's ``settings``."""

    selector: str = 'job="gpu-carbon-exporter"'  # picks the exporter's scrape job for `up` alerts
    rate_window: str = "5m"  # the smooth rates (…:sum_rate5m): averages for curves
    # The "now" rates (…:sum_irate) read the last two samples within this look-back: at least two
    # scrapes, more so that one missed scrape still leaves two (docs/rules.md).
    now_window: str = "1m"
    waste_window: str = "1h"
    windows: tuple[str, ...] = ("1h", "1d", "7d", "30d")
    # Windows also recorded per job; longer ones only per team (a per-job 30d window keeps a
    # series for every job of the last 30 days: docs/scale.md).
    job_windows: tuple[str, ...] = ("1h", "1d")
    # The 1d/7d/30d group; under Prometheus's 5-m lookback so readers see it. The exact 1d windows
    # read the day about twice where increase() read it once: every 4 minutes they read no more
    # samples per minute than increase() every 2 (docs/scale.md).
    long_interval: str = "4m"
    # The 1h windows' group. Exact windows read each sample of the window about twice (docs/rules.md),
    # so they are not recomputed every 15 s: a minute is fresh enough for a window of an hour.
    window_interval: str = "1m"
    health_interval: str = "1m"  # the health alerts: slow-changing conditions, each with a `for` of minutes
    # Windows longer than a day are sums of tiles: increases over `tile`, recorded every `tile`
    # (docs/rules.md). A raw 30-day increase() would read every sample of every GPU each time.
    tile: str = "5m"
    # Tiles end this long before their evaluation: a scrape's samples carry the time it started and
    # arrive up to the scrape timeout later; a tile that missed one would lose its growth for good.
    tile_delay: str = "10s"
    impact_weights: ImpactWeights = field(default_factory=ImpactWeights)
    warning_share: float = 0.8
    # Budget exceeded and warning fire at the first evaluation that sees them (a usage crossing does
    # not flap); a duration here delays both alike, so the warning still comes first.
    budget_for: str = "0s"
    burn_rate_severity: str = "warning"
    burn_rate_tiers: tuple[tuple[str, str, float], ...] = (
        ("1h", "5m", 14.4), ("6h", "30m", 6.0), ("1d", "2h", 3.0), ("3d", "6h", 1.0))
    forecast_trend: str = "1h"
    scrape_timeout: str = "10s"  # Prometheus's default: a scrape cannot last longer
    sampler_stale_seconds: float = 60.0
    intensity_stale_seconds: float = 3 * 3600.0
    power_limit_share: float = 0.98  # "at the limit" (info)
    implausible_share: float = 1.2  # a reading this far above the limit is implausible
    unattributed_share: float = 0.2
    runbook_base: str = "https://github.com/gpu-carbon-exporter/gpu-carbon-exporter/blob/main/docs/runbooks.md"

    def long_windows(self) -> tuple[str, ...]:
        return tuple(w for w in self.windows if seconds(w) >= 86400)

    def short_windows(self) -> tuple[str, ...]:
        return tuple(w for w in self.windows if seconds(w) < 86400)

    def tiled(self, window: str) -> bool:
        """Whether a window is a sum of tiles (longer than a day) rather than an increase() of raw counters."""
        return seconds(window) > 86400

    def records_jobs(self, window: str) -> bool:
        """Whether ``job:…:increase<window>`` rules are in the base rule file."""
        return window in self.windows and window in self.job_windows

    def runbook(self, alert: str) -> str:
        return f"{self.runbook_base}#{alert.lower()}"


def settings_keys() -> dict[str, Any]:
    """Key -> default, for the budgets file's ``settings`` block and its docs."""
    return {f.name: getattr(Settings(), f.name) for f in fields(Settings)}


def with_overrides(base: Settings, values: dict[str, Any]) -> Settings:
    """A copy of ``base`` with the given (already validated) fields replaced."""
    if "impact_weights" in values:
        values = {**values, "impact_weights": ImpactWeights(**values["impact_weights"])}
    if "burn_rate_tiers" in values:
        values = {**values, "burn_rate_tiers": tuple(tuple(t) for t in values["burn_rate_tiers"])}
    for key in ("windows", "job_windows"):
        if key in values:
            values = {**values, key: tuple(values[key])}
    return replace(base, **values)

"""Carbon and energy budgets: a YAML file -> budget series, usage, burn rates, forecasts, alerts.

Each budget is its own series (``vector(limit)`` with the budget's labels), so one group holds
any number of budgets and every alert is one generic rule over all of them (docs/rules.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..schema import Problems
from ..yamlio import read_yaml  # the one YAML reader
from .settings import ImpactWeights, Settings, seconds, settings_keys, with_overrides

# scope -> (the label it matches, the level whose rules it reads)
SCOPES = {"team": ("team", "team"), "account": ("account", "account"), "namespace": ("namespace", "namespace"),
          "user": ("user", "user"), "job": ("job_id", "job"), "node": ("node", "node"),
          "site": ("site", "site"), "fleet": ("fleet", "fleet")}
BUDGET_WINDOWS = ("1d", "7d", "30d")
# unit -> (quantity, multiplier to grams or kWh)
UNITS = {"g": ("emissions", 1.0), "kg": ("emissions", 1e3), "t": ("emissions", 1e6),
         "kwh": ("energy", 1.0), "mwh": ("energy", 1e3)}
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DURATION = re.compile(r"^[1-9][0-9]*[smhd]$")
LIMIT = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]+?)(?:\s*co2e?)?\s*$", re.IGNORECASE)
SEVERITIES = ("critical", "warning", "info")


class BudgetError(ValueError):
    """Every problem of a budgets file, one per line, each naming the file and key."""


@dataclass(frozen=True)
class Budget:
    name: str
    scope: str
    match: str
    limit: float  # grams (emissions) or kWh (energy)
    quantity: str  # "emissions" or "energy"
    window: str
    warning_share: float

    @property
    def label(self) -> str:
        return SCOPES[self.scope][0]

    def labels(self) -> dict[str, str]:
        return {"budget": self.name, "scope": self.scope, "scope_value": self.match, self.label: self.match,
                "window": self.window, "quantity": self.quantity}


def _limit(text: Any, problems: Problems, where: str) -> tuple[float, str] | None:
    m = LIMIT.match(str(text)) if isinstance(text, str) else None
    if m is None:
        problems.add(where, f"expected a number and a unit (g, kg, t CO2e or kWh, MWh), got {text!r}")
        return None
    value, unit = float(m.group(1)), m.group(2).lower()
    if unit not in UNITS:
        problems.add(where, f"unknown unit {m.group(2)!r} (g, kg, t CO2e or kWh, MWh)")
        return None
    if value <= 0:
        problems.add(where, f"the limit must be above 0, got {m.group(1)}")
        return None
    quantity, factor = UNITS[unit]
    return value * factor, quantity


def _budget(item: Any, i: int, s: Settings, problems: Problems) -> Budget | None:
    where = f"budgets[{i}]"
    if not isinstance(item, dict):
        problems.add(where, "expected a mapping with name, scope, match, limit and window")
        return None
    before = len(problems.messages)
    unknown = set(item) - {"name", "scope", "match", "limit", "window", "warning_share"}
    for key in sorted(unknown):
        problems.add(f"{where}.{key}", "unknown key (name, scope, match, limit, window, warning_share)")
    name = item.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.add(f"{where}.name", f"expected 1-64 letters, digits, '_', '.' or '-', got {name!r}")
    scope = item.get("scope")
    if scope not in SCOPES:
        problems.add(f"{where}.scope", f"unknown scope {scope!r} (one of {', '.join(SCOPES)})")
    match = item.get("match")
    if not isinstance(match, (str, int)) or str(match) == "" or '"' in str(match) or "\\" in str(match):
        problems.add(f"{where}.match", f"expected the {scope if scope in SCOPES else 'scope'}'s label value, "
                      f"got {match!r}")
    window = item.get("window")
    if window not in BUDGET_WINDOWS:
        problems.add(f"{where}.window", f"unknown window {window!r} (one of {', '.join(BUDGET_WINDOWS)})")
    limit = _limit(item.get("limit"), problems, f"{where}.limit")
    share = item.get("warning_share", s.warning_share)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        problems.add(f"{where}.warning_share", f"expected a share between 0 and 1 (exclusive), got {share!r}")
    if len(problems.messages) > before or limit is None:
        return None
    return Budget(name, scope, str(match), limit[0], limit[1], window, float(share))


def _settings(raw: Any, problems: Problems) -> Settings:
    if raw is None:
        return Settings()
    if not isinstance(raw, dict):
        problems.add("settings", "expected a mapping")
        return Settings()
    defaults = settings_keys()
    good: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"settings.{key}"
        if key not in defaults:
            problems.add(where, f"unknown key (one of {', '.join(defaults)})")
            continue
        problem = _setting_problem(key, value, defaults[key])
        if problem:
            problems.add(where, problem)
        else:
            good[key] = value
    return with_overrides(Settings(), good)


def _setting_problem(key: str, value: Any, default: Any) -> str | None:
    if key == "impact_weights":
        names = set(vars(ImpactWeights()))
        if not isinstance(value, dict) or set(value) - names:
            return f"expected a mapping of {', '.join(sorted(names))} to weights"
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in value.values()):
            return "weights must be numbers >= 0"
        return None
    if key == "burn_rate_tiers":
        ok = isinstance(value, list) and value and all(
            isinstance(t, list) and len(t) == 3 and all(isinstance(d, str) and DURATION.match(d) for d in t[:2])
            and isinstance(t[2], (int, float)) and t[2] > 0 and seconds(t[1]) < seconds(t[0]) for t in value)
        return None if ok else "expected [[long, short, factor], ...] with short < long and factor > 0"
    if key in ("windows", "job_windows"):
        ok = isinstance(value, list) and value and all(isinstance(d, str) and DURATION.match(d) for d in value)
        return None if ok else "expected a list of durations such as 1h, 1d"
    if isinstance(default, str) and DURATION.match(default):
        zero_ok = key in ("budget_for", "tile_delay") and value == "0s"
        ok = isinstance(value, str) and (DURATION.match(value) or zero_ok)
        if not ok:
            return f"expected a duration such as 5m, got {value!r}"
        if key in ("long_interval", "window_interval") and seconds(value) >= 300:
            return f"must be under Prometheus's 5-minute lookback, or readers of the long windows see gaps; got {value}"
        return None
    if key == "burn_rate_severity":
        return None if value in SEVERITIES else f"expected one of {', '.join(SEVERITIES)}, got {value!r}"
    if isinstance(default, float):
        bad = isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
        if not bad and key == "warning_share" and value >= 1:
            bad = True
        return (f"expected a number above 0{' and below 1' if key == 'warning_share' else ''}, got {value!r}"
                if bad else None)
    return None if isinstance(value, str) and value else f"expected a string, got {value!r}"


def parse_budgets(data: Any, source: str = "<budgets>") -> tuple[Settings, list[Budget]]:
    """Validate a budgets document; raises BudgetError listing every problem."""
    problems = Problems(source, BudgetError, shown=None)  # every problem, one per line
    if not isinstance(data, dict):
        raise BudgetError(f"{source}: expected a mapping with 'budgets' (and optional 'settings')")
    for key in sorted(set(data) - {"settings", "budgets"}):
        problems.add(key, "unknown key (settings, budgets)")
    settings = _settings(data.get("settings"), problems)
    items = data.get("budgets")
    if not isinstance(items, list) or not items:
        problems.add("budgets", "expected a non-empty list")
        items = []
    budgets, seen = [], set()
    for i, item in enumerate(items):
        b = _budget(item, i, settings, problems)
        if b is None:
            continue
        if b.name in seen:
            problems.add(f"budgets[{i}].name", f"duplicate budget name {b.name!r}")
            continue
        seen.add(b.name)
        budgets.append(b)
    problems.raise_if_any()
    return settings, budgets


def load_budgets(path: str | Path) -> tuple[Settings, list[Budget]]:
    try:
        data = read_yaml(Path(path))
    except ConfigError as err:
        raise BudgetError(str(err)) from None
    return parse_budgets(data, str(path))

"""Rules and alerts for a list of budgets (see budgets.py for the file format)."""
from __future__ import annotations

import re

from ..names import (
    BUDGET__BUDGET_BURN_RATE__RATIO_INCREASE as BURN_RATE, BUDGET__BUDGET_LIMIT__VALUE as LIMIT,
    BUDGET__BUDGET_TIME_LEFT_SECONDS__RATE_INCREASE as TIME_LEFT, BUDGET__BUDGET_USAGE__INCREASE as USAGE,
    BUDGET__BUDGET_USAGE__PREDICT_LINEAR as PROJECTED, BUDGET__BUDGET_USAGE__RATIO as USAGE_RATIO,
    BUDGET__BUDGET_USAGE__UPPER_INCREASE as UPPER_USAGE, BUDGET__BUDGET_WARNING__RATIO as WARNING, SECONDS_PER_HOUR,
)
from .alerts import alert
from .budgets import Budget
from .recording import (
    job_tile, job_window, node_tile, node_window, power_group, scope_tile, scope_window, tiled_window, window_groups,
)
from .settings import Settings, seconds

INFO_SCOPES = ("team", "account", "namespace", "user")
METRIC = {("job", "emissions"): "gpu_carbon_job_emissions_grams", ("job", "energy"): "gpu_carbon_job_energy_kwh",
          ("node", "emissions"): "gpu_carbon_emissions_grams", ("node", "energy"): "gpu_carbon_energy_kwh"}
DESCRIBE = ('budget {{ $labels.budget }} ({{ $labels.scope }} "{{ $labels.scope_value }}", '
            '{{ $labels.quantity }} over {{ $labels.window }})')


def _family(scope: str) -> str:
    return "node" if scope in ("node", "site", "fleet") else "job"


def usage_metric(b: Budget, window: str) -> str:
    """The recorded rule holding ``b``'s scope usage over ``window``."""
    return f"{b.scope}:{METRIC[(_family(b.scope), b.quantity)]}:increase{window}"


def recent(b: Budget, s: Settings) -> str:
    """How far back the budget's usage window can lag, rounded up to minutes: its group's interval
    (``long_interval``), a tile more for a window summed from tiles, and a minute for the groups that
    read it. The usage over this last stretch is recorded at every evaluation."""
    lag = seconds(s.long_interval) + (seconds(s.tile) if s.tiled(b.window) else 0) + 60
    return f"{-(-lag // 60)}m"


def lookbacks(b: Budget, s: Settings) -> list[str]:
    """Windows a budget reads: its own, its recent stretch, and both windows of every burn-rate tier
    that fits in it."""
    out = [b.window, recent(b, s)]
    for long, short, _ in tiers(b, s):
        out += [long, short]
    return sorted(set(out), key=seconds)


def tiers(b: Budget, s: Settings) -> list[tuple[str, str, float]]:
    """The tiers that can warn before the budget is used up: burning ``factor`` times the sustainable
    rate over the long window spends less than the whole budget (a 1-day budget keeps only 1h/5m)."""
    return [t for t in s.burn_rate_tiers if seconds(t[0]) * t[2] < seconds(b.window)]


def _usage_rules(scope: str, quantity: str, L: str, match: str, s: Settings) -> list[tuple[str, dict]]:
    """(group, rule) pairs behind ``scope``'s usage over ``L``; group is "tile", "fast" or "long".
    ``match``: a regex of the job ids of job-scope budgets (tiles are recorded for those jobs only)."""
    metric = METRIC[(_family(scope), quantity)]
    # Burn-rate windows of an hour and more need no 15-s freshness: the slower group keeps them cheap.
    group = "long" if seconds(L) >= SECONDS_PER_HOUR else "fast"
    tile = s.tile if s.tiled(L) else None
    if _family(scope) == "node":
        tiles = [("tile", node_tile(metric, s.tile, s.tile_delay))] if tile else []
        return tiles + [(group, r) for r in node_window(metric, L, tile)]
    if tile:
        first = (scope_tile(scope, metric, s.tile, s.tile_delay) if scope in INFO_SCOPES
                 else job_tile(metric, s.tile, match, s.tile_delay))
        return [("tile", first), (group, tiled_window(scope, metric, L, s.tile))]
    if scope in INFO_SCOPES:
        return [(group, scope_window(scope, metric, f"increase{L}", recorded=s.records_jobs(L)))]
    return [(group, job_window(metric, L))]


def usage_groups(budgets: list[Budget], s: Settings) -> list[dict]:
    """Usage windows the budgets need and the base rule file does not record already."""
    seen = {(r["record"], r["expr"]) for g in (power_group(s), *window_groups(s)) for r in g["rules"]}
    needed = {(b.scope, b.quantity, L) for b in budgets for L in lookbacks(b, s)}
    # A regex inside a PromQL string: re.escape's backslashes are doubled for the string literal.
    jobs = "|".join(sorted(re.escape(b.match).replace("\\", "\\\\") for b in budgets if b.scope == "job"))
    groups: dict[str, list[dict]] = {"fast": [], "tile": [], "long": []}
    for scope, quantity, L in sorted(needed, key=lambda k: (seconds(k[2]), k)):
        for group, rule in _usage_rules(scope, quantity, L, jobs, s):
            if (rule["record"], rule["expr"]) not in seen:
                seen.add((rule["record"], rule["expr"]))
                groups[group].append(rule)
    # The short usage windows are exact growths too (promql.growth): refreshed every window_interval.
    return [{"name": "gpu_carbon_budget_usage", "interval": s.window_interval, "rules": groups["fast"]},
            {"name": "gpu_carbon_budget_tiles", "interval": s.tile, "rules": groups["tile"]},
            {"name": "gpu_carbon_budget_usage_long", "interval": s.long_interval, "rules": groups["long"]}]


def _per_budget(b: Budget, s: Settings) -> list[dict]:
    labels = b.labels()
    sel = f'{{{b.label}="{b.match}"}}'
    window = f"sum({usage_metric(b, b.window)}{sel})"
    # The window is recorded every long_interval (and sums tiles beyond a day), so it lags by up to
    # recent(b); the usage over that recent stretch is recorded at every evaluation.
    latest = f"(sum({usage_metric(b, recent(b, s))}{sel}) or vector(0))"
    one = f'{{budget="{b.name}"}}'
    W = seconds(b.window)
    rules = [
        {"record": LIMIT, "expr": f"vector({b.limit:g})", "labels": labels},
        {"record": WARNING, "expr": f"vector({b.warning_share:g})", "labels": labels},
        # The window, or the recent stretch where that is more: a burst shows at once, not a long_interval later.
        {"record": USAGE, "expr": f"({window} >= {latest}) or {latest}",
         "labels": labels},
        # At least the usage now: the window as last recorded plus all of the recent stretch (what the
        # window may not hold yet). The warning reads it, so it never comes after the exceeded alert.
        {"record": UPPER_USAGE, "expr": f"({window} or vector(0)) + {latest}",
         "labels": labels},
    ]
    for L in sorted({x for t in tiers(b, s) for x in t[:2]}, key=seconds):
        rules.append({"record": f"{BURN_RATE}{L}",
                      "expr": f"sum({usage_metric(b, L)}{sel}) / {seconds(L)} / ({b.limit:g} / {W})",
                      "labels": labels})
    for L in sorted({t[0] for t in tiers(b, s)}, key=seconds):
        # What is left of the limit at the pace of the last L, in whole seconds: the burn-rate alert's description.
        rules.append({"record": f"{TIME_LEFT}{L}",
                      "expr": f"round(clamp_min({LIMIT}{one} - {USAGE}{one}, 0) / on () group_left () "
                              f"(sum({usage_metric(b, L)}{sel}) / {seconds(L)}))",
                      "labels": labels})
    horizon = min(W // 4, 86400)
    rules.append({"record": PROJECTED,
                  "expr": f'predict_linear({USAGE}{{budget="{b.name}"}}'
                          f"[{s.forecast_trend}], {horizon})",
                  "labels": {**labels, "horizon": f"{horizon // SECONDS_PER_HOUR}h"}})
    return rules


def _alerts(budgets: list[Budget], s: Settings) -> list[dict]:
    ratio = USAGE_RATIO
    upper = f"{UPPER_USAGE} / {LIMIT}"
    rules = [
        alert(s, "GpuCarbonBudgetExceeded", f"{ratio} >= 1", "critical", "A carbon or energy budget is used up.",
              f"{DESCRIBE} has used {{{{ $value | humanizePercentage }}}} of its limit.", s.budget_for),
        # Fires while the usage, counting what its window may not hold yet, is at or past the warning share:
        # so also while the budget is exceeded, never after the exceeded alert however fast it burns
        # (Alertmanager's example inhibits it then).
        alert(s, "GpuCarbonBudgetWarning", f"{ratio} and ({upper} >= {WARNING})",
              "warning", "A carbon or energy budget is nearly used up.",
              f"{DESCRIBE} has used {{{{ $value | humanizePercentage }}}} of its limit and, with its latest usage, "
              "reached its warning share.", s.budget_for),
    ]
    for long, short, factor in s.burn_rate_tiers:
        if not any((long, short, factor) in tiers(b, s) for b in budgets):
            continue
        left = (f"{{{{ with printf \"{TIME_LEFT}{long}{{budget='%s'}}\" "
                "$labels.budget | query }}{{ . | first | value | humanizeDuration }}{{ end }}")
        rule = alert(
            s, "GpuCarbonBudgetBurnRate",
            f"{BURN_RATE}{long} > {factor:g} and {BURN_RATE}{short} > {factor:g}",
            s.burn_rate_severity, "A budget is being spent much faster than it lasts.",
            f"{DESCRIBE} is being spent at {{{{ $value | humanize }}}} times its sustainable rate over the last {long} "
            f"(and over {short}, both above {factor:g}): at that pace what is left of its limit lasts {left}.", None)
        rule["labels"]["tier"] = f"{long}/{short}"
        rules.append(rule)
    rules.append(alert(
        s, "GpuCarbonBudgetExhaustionForecast",
        f"{PROJECTED} >= ignoring (horizon) group_left {LIMIT} "
        f"unless ignoring (horizon) {ratio} >= 1",
        "warning", "A budget is forecast to run out.",
        f"{DESCRIBE} will reach its limit within {{{{ $labels.horizon }}}} at the trend of the last "
        f"{s.forecast_trend} (forecast {{{{ $value | humanize }}}}).", "30m"))
    return rules


def budget_groups(budgets: list[Budget], s: Settings) -> list[dict]:
    rules = [r for b in budgets for r in _per_budget(b, s)]
    rules.append({"record": USAGE_RATIO, "expr": f"{USAGE} / {LIMIT}"})
    return usage_groups(budgets, s) + [{"name": "gpu_carbon_budgets", "rules": rules},
                                       {"name": "gpu_carbon_budget_alerts", "rules": _alerts(budgets, s)}]

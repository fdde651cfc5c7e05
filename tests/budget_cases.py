"""The promtool cases of prometheus/tests/budgets_test.yml and budget_tiers_test.yml, each figure
worked out beside it.

Regenerate with ``python tests/budget_cases.py``; tests/test_rules.py checks the committed
files equal this output. Rates are chosen so every figure is exact: 1e-4 g/J on node a.

The slow burn-rate tiers need a day or more of history. promtool evaluates every group at every
step of its one evaluation interval, so at 1-minute steps those two cases took 54 s of the suite's
CPU (223 s beside the rest of it on the 2-core CI machine). They run from budget_tiers_test.yml at
5-minute steps over rules generated for that step (prometheus/tests/budget_tiers.yml: 5-minute
tiles, the one budget they read): 5 s. Their figures are steady rates, the same at either step;
the cases whose figures turn on the minute (a crossing between two evaluations) stay at 1 minute.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from gpu_carbon_exporter.mixin import Settings

OUT = Path(__file__).resolve().parent.parent / "prometheus" / "tests" / "budgets_test.yml"
TIERS_OUT = OUT.with_name("budget_tiers_test.yml")
S = Settings()
ALLOC = ',view="allocated"'
E, W = "GpuCarbonBudgetExceeded", "GpuCarbonBudgetWarning"
B, F = "GpuCarbonBudgetBurnRate", "GpuCarbonBudgetExhaustionForecast"
ORDER = ["gpu_carbon_power", "gpu_carbon_windows", "gpu_carbon_tiles", "gpu_carbon_windows_long",
         "gpu_carbon_budget_usage", "gpu_carbon_budget_tiles", "gpu_carbon_budget_usage_long", "gpu_carbon_budgets",
         "gpu_carbon_budget_alerts"]


def describe(b, scope, val, q, w):
    return f'budget {b} ({scope} "{val}", {q} over {w})'


def lab(b, scope, label, val, w, q):
    return {"budget": b, "scope": scope, "scope_value": val, label: val, "window": w, "quantity": q}


def burn(b, scope, val, q, w, long, short, factor, value, left):
    """The burn-rate alert: the measured pace (``value``) and the time what is left lasts at it (``left``)."""
    return {"exp_labels": {**lab(b, scope, scope, val, w, q), "severity": "warning", "tier": f"{long}/{short}"},
            "exp_annotations": {
                "summary": "A budget is being spent much faster than it lasts.",
                "description": f"{describe(b, scope, val, q, w)} is being spent at {value} times its sustainable rate "
                               f"over the last {long} (and over {short}, both above {factor}): at that pace what is "
                               f"left of its limit lasts {left}.",
                "runbook_url": S.runbook(B)}}


def used(alert, sev, summary, b, scope, val, q, w, pct):
    tail = " and, with its latest usage, reached its warning share." if alert == W else "."
    return {"exp_labels": {**lab(b, scope, scope, val, w, q), "severity": sev},
            "exp_annotations": {"summary": summary,
                                "description": f"{describe(b, scope, val, q, w)} has used {pct} of its limit{tail}",
                                "runbook_url": S.runbook(alert)}}


def warning(b, scope, val, q, w, pct):
    return used(W, "warning", "A carbon or energy budget is nearly used up.", b, scope, val, q, w, pct)


def exceeded(b, scope, val, q, w, pct):
    return used(E, "critical", "A carbon or energy budget is used up.", b, scope, val, q, w, pct)


def close(expr, labels, value, t):
    sel = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    return {"expr": f"abs({expr}{sel} - {value}) <= bool {abs(value) * 1e-9 + 1e-12}", "eval_time": t,
            "exp_samples": [{"labels": sel, "value": 1}]}


def job(jid, node, extra=""):
    return f'cluster="c1",node="{node}",site="s1",fleet="datacenter",job_id="{jid}",scheduler="slurm"{extra}'


def job_series(jid, node, team, acct, ns, user, e_per_step, g_per_step, steps, then=0):
    def tail(per):
        return f"0+{per}x{steps}" + (f" {per * steps}x{then}" if then else "")
    return [
        {"series": f"gpu_carbon_job_energy_joules_total{{{job(jid, node, ALLOC)}}}", "values": tail(e_per_step)},
        {"series": f"gpu_carbon_job_emissions_grams_total{{{job(jid, node, ALLOC)}}}", "values": tail(g_per_step)},
        {"series": f'gpu_carbon_job_info{{{job(jid, node)},team="{team}",account="{acct}",namespace="{ns}",'
                   f'user="{user}"}}', "values": f"1x{steps + then}"}]


def fast_burn() -> dict:
    """Team nlp's job 7 burns 0.2 g/s (2 kW) for 60 min against 1 kg/day: 17.28x the sustainable
    1000 g / 86400 s over both 1h and 5m, so the fast tier fires, stating that pace and the time
    the 280 g left last at it (0.2 g/s: 1400 s, 23m 20s); the 6h burn is 2.88 < 6 and 720 g plus
    the last 3 minutes' 36 g is under 80 %, so nothing else does but the forecast (720 g + 0.2 g/s
    x 6 h = 5040 g >= 1 kg). Five minutes after the job stops the 5m window is 0 and the tier stops."""
    nlp = lab("nlp-day", "team", "team", "nlp", "1d", "emissions")
    forecast = {"exp_labels": {**nlp, "horizon": "6h", "severity": "warning"},
                "exp_annotations": {"summary": "A budget is forecast to run out.",
                                    "description": f'{describe("nlp-day", "team", "nlp", "emissions", "1d")} will '
                                                   "reach its limit within 6h at the trend of the last 1h "
                                                   "(forecast 5.04k).",
                                    "runbook_url": S.runbook(F)}}
    return {"name": "fast burn", "interval": "1m",
            "input_series": job_series("7", "a", "nlp", "acc1", "ml", "ann", 120000, 12, 60, 10),
            "promql_expr_test": [close("budget:gpu_carbon_budget_usage:ratio", nlp, 0.72, "60m"),
                                 close("budget:gpu_carbon_budget_burn_rate:ratio_increase1h", nlp, 17.28, "60m"),
                                 close("budget:gpu_carbon_budget_limit:value", nlp, 1000, "60m"),
                                 close("budget:gpu_carbon_budget_time_left_seconds:rate_increase1h", nlp, 1400, "60m"),
                                 close("budget:gpu_carbon_budget_usage:upper_increase", nlp, 756, "60m")],
            "alert_rule_test": [
                {"eval_time": "60m", "alertname": B,
                 "exp_alerts": [burn("nlp-day", "team", "nlp", "emissions", "1d", "1h", "5m", 14.4, "17.28",
                                     "23m 20s")]},
                {"eval_time": "66m", "alertname": B, "exp_alerts": []},
                {"eval_time": "60m", "alertname": E, "exp_alerts": []},
                {"eval_time": "60m", "alertname": W, "exp_alerts": []},
                {"eval_time": "60m", "alertname": F, "exp_alerts": [forecast]}]}


def burst() -> dict:
    """A fast burn past the limit within one evaluation (as a 1d window, updated every 2 minutes, can
    jump): team nlp's job 7 uses 1.2 kg between 9 and 10 min against 1 kg/day. Both the warning and
    the exceeded alert fire at 10 min, the first evaluation that sees it: the warning never after
    the exceeded alert, which has no 'for' delay."""
    series = job_series("7", "a", "nlp", "acc1", "ml", "ann", 0, 0, 9)
    series[0]["values"] = "0x9 12000000x10"
    series[1]["values"] = "0x9 1200x10"
    series[2]["values"] = "1x19"
    args = ("nlp-day", "team", "nlp", "emissions", "1d")
    return {"name": "fast burn: past the limit within one evaluation", "interval": "1m", "input_series": series,
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": W, "exp_alerts": []},
                {"eval_time": "9m", "alertname": E, "exp_alerts": []},
                {"eval_time": "10m", "alertname": W, "exp_alerts": [warning(*args, "120%")]},
                {"eval_time": "10m", "alertname": E, "exp_alerts": [exceeded(*args, "120%")]}]}


def warning_and_exceeded() -> dict:
    """Team cv's job 8 draws 100 W against 0.05 kWh/day with a 50 % warning: 50 % at 15 min, 100 % at
    30 min. The warning counts the last 3 minutes again (what a window recorded every 2 minutes may
    not hold yet), so it fires at 12 min (40 % + 10 %); the exceeded alert at 30 min, the first
    evaluation at 100 %; the warning fires on with it. At 60 min the 1h and 5m burn is 48x: the fast
    tier fires, and says the budget is used up (0 s left). A 1-day budget has no 6h/30m or 1d/2h
    tier (they could only fire once it is used up), though the 6h burn is 8x."""
    args = ("cv-day", "team", "cv", "energy", "1d")
    return {"name": "fast burn: warning, then exceeded at the first evaluation", "interval": "1m",
            "input_series": job_series("8", "a", "cv", "acc2", "ml", "bob", 6000, 0.6, 70),
            "alert_rule_test": [
                {"eval_time": "11m", "alertname": W, "exp_alerts": []},
                {"eval_time": "12m", "alertname": W, "exp_alerts": [warning(*args, "40%")]},
                {"eval_time": "29m", "alertname": E, "exp_alerts": []},
                {"eval_time": "30m", "alertname": E, "exp_alerts": [exceeded(*args, "100%")]},
                {"eval_time": "30m", "alertname": W, "exp_alerts": [warning(*args, "100%")]},
                {"eval_time": "40m", "alertname": E, "exp_alerts": [exceeded(*args, "133.3%")]},
                {"eval_time": "60m", "alertname": B, "exp_alerts": [
                    burn("cv-day", "team", "cv", "energy", "1d", "1h", "5m", 14.4, "48", "0s")]}]}


def slow_burn() -> dict:
    """User ivy's job 11 spends 2.5 g a minute against 2 kg/day (1.8x the sustainable rate: no burn
    tier, which starts at 14.4x): 1600 g (80 %) at 640 min, 2000 g at 800 min. The warning counts the
    last 3 minutes again, so it fires at 637 min (1592.5 g, 79.62 %, + 7.5 g); the exceeded alert at
    800 min, the first evaluation at 100 %."""
    args = ("ivy-day", "user", "ivy", "emissions", "1d")
    return {"name": "slow burn", "interval": "1m",
            "input_series": job_series("11", "a", "ops", "acc11", "ml11", "ivy", 25000, 2.5, 810),
            "alert_rule_test": [
                {"eval_time": "636m", "alertname": W, "exp_alerts": []},
                {"eval_time": "637m", "alertname": W, "exp_alerts": [warning(*args, "79.62%")]},
                {"eval_time": "799m", "alertname": E, "exp_alerts": []},
                {"eval_time": "800m", "alertname": E, "exp_alerts": [exceeded(*args, "100%")]},
                {"eval_time": "800m", "alertname": B, "exp_alerts": []}]}


def no_burn() -> dict:
    """Team nlp's job 7 runs an hour and uses nothing (its counters stay at 0): the usage, its upper
    bound and every burn rate read 0, and no budget alert fires."""
    nlp = lab("nlp-day", "team", "team", "nlp", "1d", "emissions")
    return {"name": "no burn", "interval": "1m",
            "input_series": job_series("7", "a", "nlp", "acc1", "ml", "ann", 0, 0, 60),
            "promql_expr_test": [close("budget:gpu_carbon_budget_usage:increase", nlp, 0, "60m"),
                                 close("budget:gpu_carbon_budget_usage:upper_increase", nlp, 0, "60m"),
                                 close("budget:gpu_carbon_budget_burn_rate:ratio_increase1h", nlp, 0, "60m")],
            "alert_rule_test": [{"eval_time": "60m", "alertname": a, "exp_alerts": []} for a in (E, W, B, F)]}


def every_scope() -> dict:
    """Job 9 (team rl, account acc9, namespace ml9, user ivy) and GPU 0 of node a at 10 W and
    0.001 g/s for an hour: each scope reads its own rules (3.6 g, 0.01 kWh); a budget with no
    usage reads 0; nothing fires."""
    node = 'cluster="c1",node="a",site="s1",fleet="datacenter",gpu="0",uuid="GPU-a0"'
    series = job_series("9", "a", "rl", "acc9", "ml9", "ivy", 600, 0.06, 60) + [
        {"series": f'gpu_carbon_gpu_energy_joules_total{{{node},method="counter"}}', "values": "0+600x60"},
        {"series": f"gpu_carbon_gpu_emissions_grams_total{{{node}}}", "values": "0+0.06x60"}]
    checks = [("acc9-week", "account", "account", "acc9", "7d", "emissions", 3.6),
              ("ml9-week", "namespace", "namespace", "ml9", "7d", "energy", 0.01),
              ("ivy-day", "user", "user", "ivy", "1d", "emissions", 3.6),
              ("job-9", "job", "job_id", "9", "1d", "emissions", 3.6),
              ("node-a", "node", "node", "a", "1d", "energy", 0.01),
              ("site-s1", "site", "site", "s1", "30d", "emissions", 3.6),
              ("datacenter", "fleet", "fleet", "datacenter", "30d", "emissions", 3.6),
              ("rl-month", "team", "team", "rl", "30d", "energy", 0.01)]
    nlp = lab("nlp-day", "team", "team", "nlp", "1d", "emissions")
    zero = {"expr": 'budget:gpu_carbon_budget_usage:increase{budget="nlp-day"}', "eval_time": "60m",
            "exp_samples": [{"labels": "budget:gpu_carbon_budget_usage:increase{"
                             + ",".join(f'{k}="{v}"' for k, v in nlp.items()) + "}", "value": 0}]}
    return {"name": "every scope", "interval": "1m", "input_series": series,
            "promql_expr_test": [close("budget:gpu_carbon_budget_usage:increase", lab(b, s, lb, v, w, q), x, "60m")
                                 for b, s, lb, v, w, q, x in checks] + [zero],
            "alert_rule_test": [{"eval_time": "60m", "alertname": a, "exp_alerts": []} for a in (E, W, B, F)]}


def slow_tiers() -> dict:
    """Job 10 (namespace ml9; no other budget covers it) at 1440 W for 25 h against 50.4 kWh/week (300 W sustainable):
    4.8x
    over 1d and 2h (> 3: the 1d/2h tier), and over 3d (25 h of 72 h: 1.667x) and 6h (> 1: the
    3d/6h tier); under 6x (6h/30m) and 14.4x (1h/5m). The 3d window sums 5-minute tiles. 36 kWh used,
    14.4 kWh left: at the last day's 34.56 kWh/day it lasts 10 h, at the last 3 days' 12 kWh/day 1.2 days."""
    return {"name": "slow tiers", "interval": "1m",
            "input_series": job_series("10", "a", "ops", "acc0", "ml9", "zed", 86400, 8.64, 1500),
            "alert_rule_test": [{"eval_time": "25h", "alertname": B, "exp_alerts": [
                burn("ml9-week", "namespace", "ml9", "energy", "7d", "1d", "2h", 3, "4.8", "10h 0m 0s"),
                burn("ml9-week", "namespace", "ml9", "energy", "7d", "3d", "6h", 1, "1.667", "1d 4h 48m 0s")]}]}


def six_hour_tier() -> dict:
    """Job 10 (namespace ml9) at 2400 W for 7 h against 50.4 kWh/week (300 W sustainable): 8x over
    6h and 30m (> 6: the 6h/30m tier); under 14.4x (1h/5m); 7 h of it is 2.33x of a day (< 3) and
    0.78x of 3 days (< 1): no other tier. 16.8 kWh used, 33.6 kWh left: 14 h at 2.4 kW."""
    return {"name": "six-hour tier", "interval": "1m",
            "input_series": job_series("10", "a", "ops", "acc0", "ml9", "zed", 144000, 14.4, 420),
            "alert_rule_test": [{"eval_time": "7h", "alertname": B, "exp_alerts": [
                burn("ml9-week", "namespace", "ml9", "energy", "7d", "6h", "30m", 6, "8", "14h 0m 0s")]}]}


def _render(rules_dir: str, step: str, tests: list[dict]) -> str:
    body = {"rule_files": [f"{rules_dir}/gpu-carbon-recording.yml", f"{rules_dir}/gpu-carbon-budgets.yml"],
            "evaluation_interval": step,
            # Prometheus runs groups independently (a reader can lag its source group by one interval);
            # here they run in dependency order so every figure is exact.
            "group_eval_order": ORDER,
            "tests": tests}
    name = "budgets_test.yml" if rules_dir == "rules" else "budget_tiers_test.yml"
    head = (f"# Generated by tests/budget_cases.py (each figure worked out there); "
            f"run by tests/test_promtool_cases.py: promtool test rules {name}\n")
    return head + yaml.safe_dump(body, sort_keys=False, width=200)


def render() -> str:
    return _render("rules", "1m", [fast_burn(), burst(), warning_and_exceeded(), slow_burn(), no_burn(), every_scope()])


def render_tiers() -> str:
    """The slow tiers at 5-minute steps, over rules generated from budget_tiers.yml (5-minute tiles)."""
    return _render("rules-tiers", "5m", [slow_tiers(), six_hour_tier()])


if __name__ == "__main__":
    OUT.write_text(render())
    TIERS_OUT.write_text(render_tiers())
    sys.exit(0)

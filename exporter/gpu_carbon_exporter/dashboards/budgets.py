"""Carbon budgets: per budget, usage against the limit, burn rate per window, projected use and
the budget alerts firing (the rules of `gpu-carbon-exporter rules --budgets FILE`)."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from ..mixin.settings import Settings
from ..names import (
    BUDGET__BUDGET_BURN_RATE__RATIO_INCREASE as BURN_RATE, BUDGET__BUDGET_LIMIT__VALUE as LIMIT,
    BUDGET__BUDGET_USAGE__INCREASE as USAGE, BUDGET__BUDGET_USAGE__PREDICT_LINEAR as PROJECTED,
    BUDGET__BUDGET_USAGE__RATIO as USAGE_RATIO,
)
from .common import USED, datasource_only, link, query_variable, series_panel, table_panel

UID = "gpu-carbon-budgets"
TITLE = "GPU carbon / Carbon budgets"
SEL = 'budget=~"$budget"'


def panels() -> list:
    # the long windows of the burn-rate tiers the rules record
    burn = [(f"{BURN_RATE}{w}{{{SEL}}}", f"{{{{budget}}}} over {w}")
            for w, _, _ in Settings().burn_rate_tiers]
    return [
        table_panel("Budgets", "Each budget's usage over its rolling window as a share of its limit "
                    "(budget:gpu_carbon_budget_usage:ratio).", f"{USAGE_RATIO}{{{SEL}}}",
                    "percentunit", (0, 0, 12, 8), thresholds=USED),
        table_panel("Firing budget alerts", "Budget alerts now firing (ALERTS): exceeded, warning, burn rate by "
                    "tier, forecast. Empty while every budget is within bounds.",
                    f'ALERTS{{alertname=~"GpuCarbonBudget.*", alertstate="firing", {SEL}}}', "none", (12, 0, 12, 8)),
        series_panel("Usage and limit", "Usage over the budget's window (budget:gpu_carbon_budget_usage:increase) "
                     "and its limit, in grams CO₂e or kWh as the budget counts (label quantity).",
                     [(f"{USAGE}{{{SEL}}}", "{{budget}} used ({{quantity}})"),
                      (f"{LIMIT}{{{SEL}}}", "{{budget}} limit")], "short",
                     (0, 8, 12, 8)),
        series_panel("Burn rate", "Usage over each look-back window relative to the sustainable rate (limit ÷ "
                     "window): 1 spends the budget exactly in its window (budget:gpu_carbon_budget_burn_rate:…).",
                     burn, "short", (12, 8, 12, 8)),
        series_panel("Projected use", "predict_linear of the usage a quarter of the window ahead (at most a day; "
                     "label horizon), against the limit.",
                     [(f"{PROJECTED}{{{SEL}}}", "{{budget}} in {{horizon}}"),
                      (f"{LIMIT}{{{SEL}}}", "{{budget}} limit")], "short",
                     (0, 16, 16, 8)),
        table_panel("Time to exhaustion", "When each budget runs out at the last hour's pace: (limit − usage) ÷ "
                    "deriv(usage[1h]), 0 once used up; absent while usage is not rising. A straight line: usage "
                    "leaving the rolling window is not foreseen.",
                    f"clamp_min(({LIMIT}{{{SEL}}} - on (budget) {USAGE}{{{SEL}}}) / on (budget) "
                    f"(deriv({USAGE}{{{SEL}}}[1h]) > 0), 0)", "s", (16, 16, 8, 8)),
    ]


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard(TITLE).uid(UID).tags(["gpu-carbon"]).refresh("1m").time("now-7d", "now")
             .description("Carbon and energy budgets: usage, burn rate, projection, alerts.")
             .link(link("Datacenter fleet", "gpu-carbon-fleet")))
    board = datasource_only(board)
    board = board.with_variable(query_variable("budget", "Budget",
                                               f"label_values({LIMIT}, budget)"))
    for p in panels():
        board = board.with_panel(p)
    return board

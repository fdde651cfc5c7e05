"""Job comparison: two jobs side by side — energy, carbon, duration, mean power and energy per
GPU-hour — to check that an optimised run (quantised, pruned) really used less per unit of work."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from ..names import (
    JOB_EMISSIONS_GRAMS_TOTAL, JOB_ENERGY_JOULES_TOTAL, JOB_GPU_SECONDS_TOTAL, JOB_WORK_UNITS_TOTAL, JOULES_PER_WH,
    SECONDS_PER_HOUR,
)
from .common import job_variable, kwh, link, query, series_panel, stat_panel, team_variable, variables

UID = "gpu-carbon-job-compare"
TITLE = "GPU carbon / Job comparison"


def _for(job: str) -> dict[str, tuple[str, str]]:
    sel = f'cluster=~"$cluster", job_id="${job}"'
    energy = f'sum(increase({JOB_ENERGY_JOULES_TOTAL}{{{sel}, view="allocated"}}[$__range]))'
    # Seconds the job's counter rose, on a fixed 15-s grid (a stat panel's $__interval is range ÷ width:
    # far too coarse). idelta compares the last two scrapes, so the count stops with the job (within a
    # scrape), not a rate window later while the finished job lingers; 2m holds two scrapes at 1/min.
    duration = (f'count_over_time((sum(idelta({JOB_ENERGY_JOULES_TOTAL}{{{sel}, view="allocated"}}[2m])) '
                "> 0)[$__range:15s]) * 15")
    return {
        "Energy": (kwh(energy), "kwatth"),
        "Operational CO₂e": (f'sum(increase({JOB_EMISSIONS_GRAMS_TOTAL}{{{sel}, view="allocated"}}'
                             f"[$__range]))", "suffix: g CO₂e"),
        "Duration": (f"sum({duration})", "s"),
        "Mean power": (f"{energy} / sum({duration})", "watt"),
        "Energy per GPU-hour": (f"({kwh(energy)}) / (sum(increase({JOB_GPU_SECONDS_TOTAL}{{{sel}}}"
                                f"[$__range])) / {SECONDS_PER_HOUR})", "suffix: kWh/GPU-h"),
        # Units of work the job declared (attribution.work_dir): the count it reached, summed over its
        # nodes, per unit. max_over_time, not increase(): the count is cumulative from the job's start.
        "Energy per unit of work": (f"({energy} / {JOULES_PER_WH}) / on () group_right sum by (unit) "
                                    f"(max_over_time({JOB_WORK_UNITS_TOTAL}{{{sel}}}[$__range]))",
                                    "suffix: Wh/unit"),
        "CO₂e per unit of work": (f'sum(increase({JOB_EMISSIONS_GRAMS_TOTAL}{{{sel}, view="allocated"}}'
                                  f"[$__range])) / on () group_right sum by (unit) "
                                  f"(max_over_time({JOB_WORK_UNITS_TOTAL}{{{sel}}}[$__range]))",
                                  "suffix: g CO₂e/unit"),
    }


def panels() -> list:
    a, b = _for("job"), _for("job_b")
    out = []
    for i, title in enumerate(a):
        expr_a, unit = a[title]
        pos = (i * 6, 0, 6, 5) if i < 4 else ((i - 4) * 8, 5, 8, 5)
        per_unit = "unit of work" in title
        p = stat_panel(title, f"{title} of job A and job B over the dashboard range (instant queries over "
                       "[$__range]; duration: 15-s steps in which the energy counter rose, within a scrape "
                       "interval)." + (" Units of work are what each job declared (gpu_carbon_job_work_units_total, "
                                       "docs/report.md), by unit: compare jobs that count the same unit." if per_unit
                                       else ""), expr_a, unit, pos, 4 if per_unit else 2,
                       legend="A $job {{unit}}" if per_unit else "A $job")
        out.append(p.with_target(query(b[title][0], "B $job_b {{unit}}" if per_unit else "B $job_b", instant=True,
                                       ref="B")))
    power = (f'sum by (job_id, node) (rate({JOB_ENERGY_JOULES_TOTAL}{{{{cluster=~"$cluster", job_id="${{}}", '
             'view="allocated"}}[$__rate_interval]))')
    out.append(series_panel("Power", "Both jobs' power per node, allocated view (rate of "
                            "gpu_carbon_job_energy_joules_total).",
                            [(power.format("job"), "A {{job_id}} {{node}}"),
                             (power.format("job_b"), "B {{job_id}} {{node}}")],
                            "watt", (0, 10, 24, 8)))
    return out


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard(TITLE).uid(UID).tags(["gpu-carbon"]).time("now-7d", "now")
             .description("Two jobs side by side: did the optimised one use less energy per unit of work?")
             .link(link("Job", "gpu-carbon-job")))
    board = variables(board, single_cluster=True, cluster_only=True)
    # Job A is the variable `job`, as on the job dashboard, so that its link carries the job here.
    board = board.with_variable(team_variable()).with_variable(job_variable("job", "Job A"))
    board = board.with_variable(job_variable("job_b", "Job B"))
    for p in panels():
        board = board.with_panel(p)
    return board

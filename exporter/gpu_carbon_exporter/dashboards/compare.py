"""Job comparison: two jobs side by side — energy, carbon, duration, mean power and energy per
GPU-hour — to check that an optimised run (quantised, pruned) really used less per unit of work."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from .common import job_variable, link, query, series_panel, stat_panel, team_variable, variables

UID = "gpu-carbon-job-compare"
TITLE = "GPU carbon / Job comparison"


def _for(job: str) -> dict[str, tuple[str, str]]:
    sel = f'cluster=~"$cluster", job_id="${job}"'
    energy = f'sum(increase(gpu_carbon_job_energy_joules_total{{{sel}, view="allocated"}}[$__range]))'
    # Seconds the job drew power, on a fixed 15-s grid (a stat panel's $__interval is range ÷ width:
    # far too coarse) from a 1-minute rate, so it ends within a minute of the job.
    duration = (f'count_over_time((sum(rate(gpu_carbon_job_energy_joules_total{{{sel}, view="allocated"}}[1m])) '
                "> 0)[$__range:15s]) * 15")
    return {
        "Energy": (f"{energy} / 3.6e6", "kwatth"),
        "Operational CO₂e": (f'sum(increase(gpu_carbon_job_emissions_grams_total{{{sel}, view="allocated"}}'
                             f"[$__range]))", "suffix: g CO₂e"),
        "Duration": (f"sum({duration})", "s"),
        "Mean power": (f"{energy} / sum({duration})", "watt"),
        "Energy per GPU-hour": (f"({energy} / 3.6e6) / (sum(increase(gpu_carbon_job_gpu_seconds_total{{{sel}}}"
                                f"[$__range])) / 3600)", "suffix: kWh/GPU-h"),
    }


def panels() -> list:
    a, b = _for("job"), _for("job_b")
    out = []
    for i, title in enumerate(a):
        expr_a, unit = a[title]
        p = stat_panel(title, f"{title} of job A and job B over the dashboard range (instant queries over "
                       "[$__range]; duration: 15-s steps with power above 0).", expr_a, unit, (i * 5, 0, 5, 5), 2,
                       legend="A $job")
        out.append(p.with_target(query(b[title][0], "B $job_b", instant=True, ref="B")))
    out.append(series_panel("Power", "Both jobs' power (job:gpu_carbon_job_power_watts:sum_rate5m).",
                            [('job:gpu_carbon_job_power_watts:sum_rate5m{cluster=~"$cluster", job_id="$job"}', "A {{job_id}}"),
                             ('job:gpu_carbon_job_power_watts:sum_rate5m{cluster=~"$cluster", job_id="$job_b"}',
                              "B {{job_id}}")],
                            "watt", (0, 5, 24, 8)))
    return out


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard(TITLE).uid(UID).tags(["gpu-carbon"]).time("now-7d", "now")
             .description("Two jobs side by side: did the optimised one use less energy per unit of work?")
             .link(link("Job", "gpu-carbon-job")))
    board = variables(board, node=False)
    # Job A is the variable `job`, as on the job dashboard, so that its link carries the job here.
    board = board.with_variable(team_variable()).with_variable(job_variable("job", "Job A"))
    board = board.with_variable(job_variable("job_b", "Job B"))
    for p in panels():
        board = board.with_panel(p)
    return board

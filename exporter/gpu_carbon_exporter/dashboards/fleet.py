"""Datacenter fleet: what the fleet draws and emits now, where, at what intensity; who spent the
carbon; how much was idle waste; which budgets burn."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from ..kinds import kinds
from ..mixin.promql import accounted_energy, all_grams
from ..names import (
    BUDGET__BUDGET_USAGE__RATIO, GPU__POWER_WATTS__IRATE, GPU__POWER_WATTS__RATE, GPU_UP, GPU_UTILIZATION_RATIO,
    GRAMS_PER_KG, GRID_INTENSITY_FALLBACK, GRID_INTENSITY_GRAMS_PER_KWH, GRID_INTENSITY_LOWEST_WINDOW_START_SECONDS,
    GRID_INTENSITY_SOURCE_INFO, JOB__JOB_EMISSIONS_GRAMS__INCREASE, JOB__JOB_INFO__DEDUP,
    NODE__EMISSION_RATE_GRAMS_PER_SECOND__SUM_IRATE, NODE__GPU_IDLE_ENERGY_RATIO__RATE,
    NODE__GPU_UNALLOCATED_ENERGY_RATIO__RATE, NODE__POWER_WATTS__SUM_IRATE, NODE__POWER_WATTS__SUM_RATE5M, PUE_RATIO,
    SECONDS_PER_HOUR, SITE__EMISSIONS_GRAMS__INCREASE, SITE__ENERGY_KWH__INCREASE, TEAM__JOB_EMISSIONS_GRAMS__INCREASE,
    TEAM__JOB_ENERGY_KWH__INCREASE, TEAM__JOB_GPU_HOURS__INCREASE, kind_families,
)
from . import vendors
from .common import (ANY, NODES, TARGETS, USED, data_link, heatmap_panel, kwh, link, query, series_panel, stat_panel,
                     table_panel, team_variable, variables)

UID = "gpu-carbon-fleet"
TITLE = "GPU carbon / Datacenter fleet"
TEAM = 'cluster=~"$cluster", team=~"$team"'
# Each job's team and user as last seen in the day, one label set per job (a job that finished hours
# ago is still named; the team filter applies here).
JOB_OWNERS = (f"topk by (cluster, scheduler, job_id) (1, max by (cluster, scheduler, job_id, team, user) "
              f"(last_over_time({JOB__JOB_INFO__DEDUP}{{{TEAM}}}[1d])))")
TO_JOB = [data_link("Job ${__data.fields.job_id}", "gpu-carbon-job", "var-job=${__data.fields.job_id}")]
TO_TEAM = [data_link("Jobs of team ${__data.fields.team}", "gpu-carbon-job", "var-team=${__data.fields.team}")]
TO_NODE = [data_link("Node ${__field.labels.node}", "gpu-carbon-node", "var-node=${__field.labels.node}")]
TO_NODE_ROW = [data_link("Node ${__data.fields.node}", "gpu-carbon-node", "var-node=${__data.fields.node}")]
TO_GPU = [data_link("GPU ${__data.fields.gpu} on ${__data.fields.node}", "gpu-carbon-node",
                    "var-node=${__data.fields.node}&var-gpu=${__data.fields.gpu}")]


def _range_kwh() -> str:
    # Totals over the dashboard range: increase() of the counters as an instant query over [$__range].
    return kwh(f'sum({accounted_energy("increase", "$__range", TARGETS)})')


def _estimates() -> list[tuple[str, str]]:
    """(query, legend) of each estimated kind's energy over the range (kinds.py: ``estimate``), those
    spent outside the nodes first: never in the totals above."""
    estimated = sorted((k for k in kinds() if k.estimate), key=lambda k: k.inside_node)  # stable: in order
    return [(kwh(f"sum(increase({kind_families(k.name).energy}{{{TARGETS}}}[$__range]))"),
             (k.legend or k.name) + ("" if k.inside_node else " (outside the nodes)")) for k in estimated]


def _estimates_panel():
    (first, legend), *more = _estimates()
    p = stat_panel("Estimated network and disk energy, dashboard range", "Estimates (method=\"estimated\"): the "
                   "network's energy is spent outside the nodes (bytes × kWh/GB) and is never in the totals above; "
                   "the disks' (busy time × power by class) is, where no whole-node meter measures them already "
                   "(gpu_carbon_network_energy_joules_total, gpu_carbon_storage_energy_joules_total; only where "
                   "sources.network or sources.storage is on; docs/edge.md).",
                   first, "kwatth", (0, 56, 24, 4), 3, legend=legend)
    for i, (expr, legend) in enumerate(more, start=1):
        p = p.with_target(query(expr, legend, instant=True, ref=chr(ord("A") + i)))
    return p


def panels() -> list:
    # long: one declarative list of the dashboard's panels, top to bottom, as Grafana lays them out;
    # cutting it would only scatter the grid positions that must be read together.
    now = [
        stat_panel("Power now", "Every accounted device (GPUs, boards, accounted CPU zones, the rest of each node), "
                   "from the energy counters' last two scrapes (node:gpu_carbon_power_watts:sum_irate): a step shows "
                   "two scrapes later. The curves below are 5-minute averages.",
                   f"sum({NODE__POWER_WATTS__SUM_IRATE}{{{TARGETS}}})", "watt", (0, 0, 4, 4)),
        stat_panel("Emission rate now", "Operational CO₂e per hour at the grid intensity in force, PUE included, "
                   "from the emission counters' last two scrapes "
                   "(node:gpu_carbon_emission_rate_grams_per_second:sum_irate × 3600).",
                   f"sum({NODE__EMISSION_RATE_GRAMS_PER_SECOND__SUM_IRATE}{{{TARGETS}}}) * {SECONDS_PER_HOUR}",
                   "suffix: g CO₂e/h", (4, 0, 4, 4)),
        stat_panel("Energy, dashboard range", "increase() of every accounted energy counter over the dashboard's "
                   "time range, in kWh.", _range_kwh(), "kwatth", (8, 0, 4, 4), 2),
        stat_panel("Emissions, dashboard range", "increase() of every emissions counter over the dashboard's "
                   "time range (operational, PUE included), in kg CO₂e.",
                   f'sum(increase({all_grams(TARGETS)}[$__range])) / {GRAMS_PER_KG}', "suffix: kg CO₂e",
                   (12, 0, 4, 4), 3),
        stat_panel("GPUs up / total", "GPUs answering their source, every vendor's (gpu_carbon_gpu_up == 1), "
                   "and all GPUs known.",
                   f"sum({GPU_UP}{{{TARGETS}}})", "none", (16, 0, 4, 4), legend="up")
        .with_target(query(f"count({GPU_UP}{{{TARGETS}}})", "total", instant=True, ref="B")),
        stat_panel("GPU utilisation", "Mean fraction of time a kernel ran, over the GPUs shown "
                   "(gpu_carbon_gpu_utilization_ratio).",
                   f"avg({GPU_UTILIZATION_RATIO}{{{TARGETS}}})", "percentunit", (20, 0, 4, 4)),
    ]
    windows = [
        stat_panel(f"Energy, last {w}", f"{SITE__ENERGY_KWH__INCREASE}{w} summed over the sites shown.",
                   f'sum({SITE__ENERGY_KWH__INCREASE}{w}{{{TARGETS}}})', "kwatth", (i * 4, 4, 4, 4), 1)
        for i, w in enumerate(("1d", "7d", "30d"))
    ] + [
        stat_panel(f"CO₂e, last {w}", f"{SITE__EMISSIONS_GRAMS__INCREASE}{w} (operational) summed over "
                   "the sites shown, in kg.",
                   f'sum({SITE__EMISSIONS_GRAMS__INCREASE}{w}{{{TARGETS}}}) / {GRAMS_PER_KG}', "suffix: kg CO₂e",
                   (12 + i * 4, 4, 4, 4), 1)
        for i, w in enumerate(("1d", "7d", "30d"))
    ]
    over_time = [
        series_panel("Power by node", "Accounted power per node, 5-minute averages for a smooth curve "
                     "(node:gpu_carbon_power_watts:sum_rate5m).",
                     [(f"{NODE__POWER_WATTS__SUM_RATE5M}{{{NODES}}}", "{{node}}")], "watt", (0, 8, 12, 8),
                     links=TO_NODE),
        series_panel("Grid intensity by zone", "The intensity in force per zone and node "
                     "(gpu_carbon_grid_intensity_grams_per_kwh); its source in the table beside.",
                     [(f"{GRID_INTENSITY_GRAMS_PER_KWH}{{{NODES}}}", "{{zone}} ({{node}})")],
                     "suffix: g/kWh", (12, 8, 12, 8)),
    ]
    who = [
        table_panel("Teams by CO₂e, last 7 days", "team:gpu_carbon_job_emissions_grams:increase7d: the jobs' "
                    "allocated operational emissions, by team (sums of 5-minute tiles).",
                    f"sort_desc(topk(10, {TEAM__JOB_EMISSIONS_GRAMS__INCREASE}7d{{{TEAM}}}))",
                    "suffix: g CO₂e", (0, 16, 6, 8), links=TO_TEAM),
        table_panel("Teams by CO₂e, last day", "team:gpu_carbon_job_emissions_grams:increase1d, from the jobs' "
                    "counters.", f"sort_desc(topk(10, {TEAM__JOB_EMISSIONS_GRAMS__INCREASE}1d{{{TEAM}}}))",
                    "suffix: g CO₂e", (6, 16, 6, 8), links=TO_TEAM),
        table_panel("Jobs by CO₂e, last day", "job:gpu_carbon_job_emissions_grams:increase1d, the ten largest, with "
                    "their team and user (gpu_carbon_job_info as last seen in the day). Click a row for the job.",
                    f"sort_desc(topk(10, {JOB__JOB_EMISSIONS_GRAMS__INCREASE}1d{{cluster=~\"$cluster\"}} "
                    f"* on (cluster, scheduler, job_id) group_left (team, user) {JOB_OWNERS}))",
                    "suffix: g CO₂e", (12, 16, 6, 8), links=TO_JOB),
        series_panel("Waste", "Share of each node's GPU energy used while no job held the GPU (allocated view) "
                     "and idle (active view), over the last hour (node:gpu_carbon_gpu_unallocated_energy_ratio:"
                     "rate1h, node:gpu_carbon_gpu_idle_energy_ratio:rate1h).",
                     [(f"{NODE__GPU_UNALLOCATED_ENERGY_RATIO__RATE}1h{{{NODES}}}", "unallocated {{node}}"),
                      (f"{NODE__GPU_IDLE_ENERGY_RATIO__RATE}1h{{{NODES}}}", "idle {{node}}")],
                     "percentunit", (18, 16, 6, 8)),
        table_panel("Budgets", "Each carbon or energy budget's usage over its window as a share of its limit "
                    "(budget:gpu_carbon_budget_usage:ratio; empty without a budgets file). Budgets span clusters "
                    "and fleets as their scope says, so the variables do not filter them.",
                    BUDGET__BUDGET_USAGE__RATIO, "percentunit", (0, 24, 12, 8), thresholds=USED),
        stat_panel("Greenest window starts in", "Time until the lowest-intensity window of the forecast "
                   "(gpu_carbon_grid_intensity_lowest_window_start_seconds; live providers with a forecast only).",
                   f"min({GRID_INTENSITY_LOWEST_WINDOW_START_SECONDS}{{{TARGETS}}})", "s",
                   (12, 24, 6, 8)),
        stat_panel("PUE", "The PUE applied to operational emissions (gpu_carbon_pue_ratio).",
                   f"avg({PUE_RATIO}{{{TARGETS}}})", "none", (18, 24, 6, 4), 2),
        stat_panel("Energy per GPU-hour, last day", "The jobs' kWh over their GPU-hours, teams shown "
                   "(team:gpu_carbon_job_energy_kwh:increase1d ÷ team:gpu_carbon_job_gpu_hours:increase1d).",
                   f"sum({TEAM__JOB_ENERGY_KWH__INCREASE}1d{{{TEAM}}}) / "
                   f"sum({TEAM__JOB_GPU_HOURS__INCREASE}1d{{{TEAM}}})", "suffix: kWh/GPU-h",
                   (18, 28, 6, 4), 3),
        table_panel("Intensity source", "Where each zone's intensity comes from (gpu_carbon_grid_intensity_source_"
                    "info: provider and signal) — the `source` label changes while on fallback.",
                    f"{GRID_INTENSITY_SOURCE_INFO}{{{NODES}}}", "none", (0, 32, 12, 6), links=TO_NODE_ROW),
        table_panel("Intensity on fallback", "1 while the latest poll of a live provider failed "
                    "(gpu_carbon_grid_intensity_fallback); 0 for static sources.",
                    f"{GRID_INTENSITY_FALLBACK}{{{NODES}}}", "none", (12, 32, 12, 6), thresholds=ANY,
                    links=TO_NODE_ROW),
        heatmap_panel("Power per GPU", "Each GPU's power from its energy counter, 5-minute averages "
                      "(gpu:gpu_carbon_power_watts:rate5m), one row per GPU.",
                      f"{GPU__POWER_WATTS__RATE}5m{{{NODES}}}",
                      "{{node}} GPU {{gpu}}", "watt", (0, 38, 24, 10)),
        _estimates_panel(),
        table_panel("GPUs by power now", "Each GPU's power from its energy counter's last two scrapes "
                    "(gpu:gpu_carbon_power_watts:irate), highest first. Click a row for that GPU on the node "
                    "dashboard.",
                    f"sort_desc({GPU__POWER_WATTS__IRATE}{{{NODES}}})", "watt", (0, 48, 24, 8),
                    links=TO_GPU),
    ]
    return now + windows + over_time + who + vendors.fleet_panels(TARGETS, 60)


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard(TITLE).uid(UID).tags(["gpu-carbon"]).refresh("1m").time("now-24h", "now")
             .description("Datacenter fleet: power, emissions, intensity, who spent the carbon, waste, budgets, "
                          "vendors side by side.")
             .link(link("Node and GPU", "gpu-carbon-node")).link(link("Job", "gpu-carbon-job"))
             .link(link("Budgets", "gpu-carbon-budgets")))
    board = variables(board).with_variable(team_variable())
    for p in panels():
        board = board.with_panel(p)
    return board

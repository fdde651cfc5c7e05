"""Job: what job X cost — energy, operational and embodied carbon, water, GPU-hours, the intensity
it paid, its power over its life, allocated against active energy, and where it ran."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.common import BigValueTextMode
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from ..mixin.settings import JOB as JOB_LABELS, JOB_INFO_LABELS
from ..names import (
    GPU_UTILIZATION_RATIO, GRAMS_PER_KG, JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL, JOB_EMISSIONS_GRAMS_TOTAL,
    JOB_ENERGY_JOULES_TOTAL, JOB_GPU_INFO, JOB_GPU_SECONDS_TOTAL, JOB_INFO, JOB_WATER_LITERS_TOTAL, SECONDS_PER_HOUR,
)
from .common import (data_link, kwh, link, job_variable, query, series_panel, stat_panel, table_panel, team_variable,
                     variables)

UID = "gpu-carbon-job"
TITLE = "GPU carbon / Job"
JOB = 'cluster=~"$cluster", job_id="$job"'  # one job: an id is unique within its cluster
GPU_KEY = "cluster, site, fleet, node, vendor, gpu"  # a GPU: each vendor's source numbers its GPUs from 0
# Every node of a multi-node job exposes its job_info (with its own node and pod labels): one row per
# job, with the owner labels only, the first if two nodes disagree (as job:gpu_carbon_job_info:dedup).
OWNER = (f"topk by (cluster, scheduler, job_id) (1, max by ({', '.join((*JOB_LABELS, *JOB_INFO_LABELS))}) "
         f"(last_over_time({JOB_INFO}{{{JOB}}}[$__range])))")


def _range(metric: str, extra: str = "") -> str:
    return f"sum(increase({metric}{{{JOB}{extra}}}[$__range]))"


def disclosure(energy: str, grams: str):
    """The sentence to quote: "This job used X kWh · Y kg CO₂e · at Z g CO₂e/kWh" (each figure a
    query of its own, so each keeps its unit)."""
    parts = [("This job used", kwh(energy), "kwatth", 3),
             ("and emitted", f"{grams} / {GRAMS_PER_KG}", "suffix: kg CO₂e", 3),
             ("at", f"{grams} / ({kwh(energy)})", "suffix: g CO₂e/kWh", 0)]
    p = stat_panel("Disclosure", "A line to quote: the job's allocated energy over the dashboard's time range "
                   "(widen it to cover the whole job: a job outside the range is not counted), its operational "
                   "emissions (PUE included) and the intensity it paid — emissions ÷ energy, which weights the grid "
                   "intensity by the job's own energy. GPU energy only: CPU, memory and network are not in it "
                   "(docs/accuracy.md gives the error bounds).", parts[0][1], parts[0][2], (0, 0, 24, 3),
                   parts[0][3], legend=parts[0][0])
    for ref, (words, expr, unit, decimals) in zip("BC", parts[1:]):
        p = p.with_target(query(expr, words, instant=True, ref=ref)).override_by_query(
            ref, [DynamicConfigValue("unit", unit), DynamicConfigValue("decimals", decimals)])
    return p.text_mode(BigValueTextMode.VALUE_AND_NAME)


def panels() -> list:
    energy = _range(JOB_ENERGY_JOULES_TOTAL, ', view="allocated"')
    grams = _range(JOB_EMISSIONS_GRAMS_TOTAL, ', view="allocated"')
    return [disclosure(energy, grams),
        stat_panel("Energy", "The job's GPU energy over the dashboard range, allocated view: its share of active "
                   "energy plus an equal share of idle (gpu_carbon_job_energy_joules_total).",
                   kwh(energy), "kwatth", (0, 3, 4, 4), 3),
        stat_panel("Operational CO₂e", "Emissions of that energy at the grid intensity in force, PUE included "
                   "(gpu_carbon_job_emissions_grams_total).", grams, "suffix: g CO₂e", (4, 3, 4, 4), 1),
        stat_panel("Embodied CO₂e", "Embodied carbon of the GPU time held (gpu_carbon_job_embodied_emissions_grams_"
                   "total; only with carbon.embodied configured).",
                   _range(JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL), "suffix: g CO₂e", (8, 3, 4, 4), 1),
        stat_panel("Water", "Water for the job's energy at the configured WUE (gpu_carbon_job_water_liters_total; "
                   "only with carbon.wue_liters_per_kwh).", _range(JOB_WATER_LITERS_TOTAL),
                   "litre", (12, 3, 4, 4), 2),
        stat_panel("GPU-hours", "GPU time held (gpu_carbon_job_gpu_seconds_total): a shared GPU split equally, a MIG "
                   "instance by its share.", f"{_range(JOB_GPU_SECONDS_TOTAL)} / {SECONDS_PER_HOUR}", "h",
                   (16, 3, 4, 4), 2),
        stat_panel("Intensity paid", "Operational emissions ÷ energy over the range (g CO₂e per kWh, PUE included): "
                   "this job used the energy above at this intensity.", f"{grams} / ({kwh(energy)})",
                   "suffix: g/kWh", (20, 3, 4, 4), 0),
        series_panel("Power", "The job's power on each of its nodes, allocated view (rate of "
                     "gpu_carbon_job_energy_joules_total); job:gpu_carbon_job_power_watts:sum_rate5m is their sum.",
                     [(f"sum by (node) (rate({JOB_ENERGY_JOULES_TOTAL}{{{JOB}, view=\"allocated\"}}"
                       "[$__rate_interval]))", "{{node}}")], "watt", (0, 7, 12, 8)),
        series_panel("Allocated and active energy", "Energy per second in both views, per node: allocated (active "
                     "share + equal idle share) and active only (gpu_carbon_job_energy_joules_total by view).",
                     [(f"sum by (node, view) (rate({JOB_ENERGY_JOULES_TOTAL}{{{JOB}}}[$__rate_interval]))",
                       "{{node}} {{view}}")], "watt", (12, 7, 12, 8)),
        series_panel("GPU utilisation", "Utilisation of the GPUs the job holds (gpu_carbon_gpu_utilization_ratio "
                     "joined to gpu_carbon_job_gpu_info by node, vendor and index: each vendor numbers its GPUs "
                     "from 0): the whole GPU's, also on a GPU the job shares, and while a finished job lingers; "
                     "MIG instances have no utilisation of their own.",
                     [(f"avg by (node, vendor, gpu) ({GPU_UTILIZATION_RATIO} * on ({GPU_KEY}) "
                       f"group_left (job_id) max by ({GPU_KEY}, job_id) "
                       f"({JOB_GPU_INFO}{{{JOB}}}))", "{{node}} {{vendor}} GPU {{gpu}}")], "percentunit",
                     (0, 21, 24, 8)),
        table_panel("GPUs and nodes", "Every GPU (or MIG instance) the job held in the range, by node and vendor "
                    "(gpu_carbon_job_gpu_info; a finished job is exposed only for attribution.linger_seconds, so "
                    "the range must reach back to when it ran). `device` is the physical GPU of a MIG instance; "
                    "click a row for it on the node dashboard.",
                    f'label_replace(last_over_time({JOB_GPU_INFO}{{{JOB}}}[$__range]), "device", "$1", '
                    '"gpu", "([0-9]+).*")', "none", (0, 15, 12, 6),
                    links=[data_link("${__data.fields.vendor} GPU ${__data.fields.device} on ${__data.fields.node}",
                                     "gpu-carbon-node",
                                     "var-node=${__data.fields.node}&var-gpu=${__data.fields.device}")]),
        table_panel("Owner", "The job's user, team, account and namespace (gpu_carbon_job_info) as last seen in "
                    "the range: one row per job, however many nodes expose it (each node's pod is in its own "
                    "gpu_carbon_job_info series).", OWNER, "none", (12, 15, 12, 6)),
    ]


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard(TITLE).uid(UID).tags(["gpu-carbon"]).refresh("1m").time("now-24h", "now")
             .description("What one job cost: energy, carbon, water, GPU-hours, power over its life.")
             .link(link("Compare with another job", "gpu-carbon-job-compare")).link(link("Fleet", "gpu-carbon-fleet")))
    board = (variables(board, single_cluster=True, cluster_only=True).with_variable(team_variable())
             .with_variable(job_variable("job", "Job")))
    for p in panels():
        board = board.with_panel(p)
    return board

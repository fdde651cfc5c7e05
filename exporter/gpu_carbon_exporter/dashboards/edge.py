"""Edge fleet: which devices are online, stale or down; power, energy and carbon per device,
site and fleet; the rail breakdown; CPU (RAPL) where present."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from ..kinds import kinds
from ..mixin.promql import kinds_selector
from ..names import (
    BOARD, COLLECTOR_LAST_RUN_AGE_SECONDS, COLLECTOR_SUCCESS, NODE__BOARD_POWER_WATTS__SUM_RATE5M,
    NODE__CPU_POWER_WATTS__SUM_RATE5M, NODE__POWER_WATTS__SUM_IRATE, NODE__RAIL_POWER_WATTS__SUM_RATE5M,
    SITE__BOARD_ENERGY_KWH__INCREASE, SITE__EMISSIONS_GRAMS__INCREASE,
)
from .common import ANY, UP, kwh, link, series_panel, stat_panel, table_panel, variables

UID = "gpu-carbon-edge"
TITLE = "GPU carbon / Edge fleet"
EDGE = 'fleet="edge", cluster=~"$cluster", site=~"$site", node=~"$node"'
# Kinds with panels of their own here (boards, rails, CPU zones) or on other dashboards (GPUs): every
# other measured kind (kinds.py) is in "Other sensors and whole-device meters".
OWN_PANELS = ("gpu", "board", "rail", "cpu")


def _other_energy() -> str:
    """The energy counters of every measured kind without a panel of its own."""
    others = [k.name for k in kinds() if not k.estimate and k.name not in OWN_PANELS]
    return kinds_selector(others, "energy_joules_total", EDGE)


def panels() -> list:
    return [
        stat_panel("Devices online", "Edge exporters Prometheus can scrape (up) out of all configured: an "
                   "offline device's own series go stale, so its target is what shows it.",
                   f"sum(up{{{EDGE}}}) / count(up{{{EDGE}}})", "percentunit", (0, 0, 4, 4), thresholds=UP),
        stat_panel("Devices down", "Edge exporters Prometheus cannot scrape now (up == 0).",
                   f"count(up{{{EDGE}}} == 0) or vector(0)", "none", (4, 0, 4, 4), thresholds=ANY),
        stat_panel("Devices with a stale sampler", "Edge devices with a collector that was working and has not "
                   "run for over 60 s (gpu_carbon_collector_last_run_age_seconds, gpu_carbon_collector_success).",
                   f"count(count by (cluster, site, node) ({COLLECTOR_LAST_RUN_AGE_SECONDS}{{{EDGE}}} > 60 "
                   f"and {COLLECTOR_SUCCESS}{{{EDGE}}} == 1)) or vector(0)", "none", (8, 0, 4, 4),
                   thresholds=ANY),
        stat_panel("Edge power now", "Every accounted edge device, from the energy counters' last two scrapes "
                   "(node:gpu_carbon_power_watts:sum_irate); the curves below are 5-minute averages.",
                   f"sum({NODE__POWER_WATTS__SUM_IRATE}{{{EDGE}}})", "watt", (12, 0, 6, 4), 1),
        stat_panel("Edge CO₂e, last day", "site:gpu_carbon_emissions_grams:increase1d for the edge fleet.",
                   f'sum({SITE__EMISSIONS_GRAMS__INCREASE}1d{{fleet="edge", cluster=~"$cluster", '
                   'site=~"$site"})', "suffix: g CO₂e", (18, 0, 6, 4), 1),
        series_panel("Board power by device", "Total input power of each board, from its energy counter "
                     "(node:gpu_carbon_board_power_watts:sum_rate5m).",
                     [(f"{NODE__BOARD_POWER_WATTS__SUM_RATE5M}{{{EDGE}}}", "{{node}}")], "watt",
                     (0, 4, 12, 8)),
        series_panel("Rails", "Each power rail (VDD_IN, CPU/GPU/SOC, …) of each board "
                     "(node:gpu_carbon_rail_power_watts:sum_rate5m); inside the board total.",
                     [(f"{NODE__RAIL_POWER_WATTS__SUM_RATE5M}{{{EDGE}}}", "{{node}} {{rail}}")], "watt",
                     (12, 4, 12, 8)),
        table_panel("Energy per device, dashboard range", "increase() of each board's energy counter over the "
                    "range, in kWh.",
                    kwh(f"sum by (site, node) (increase({BOARD.energy}{{{EDGE}}}[$__range]))"),
                    "kwatth", (0, 12, 8, 8)),
        table_panel("CO₂e per device, dashboard range", "increase() of each board's emissions counter over the "
                    "range.", f"sum by (site, node) (increase({BOARD.emissions}{{{EDGE}}}"
                    "[$__range]))", "suffix: g CO₂e", (8, 12, 8, 8)),
        table_panel("Energy per site, last day", "site:gpu_carbon_board_energy_kwh:increase1d.",
                    f'{SITE__BOARD_ENERGY_KWH__INCREASE}1d{{fleet="edge", cluster=~"$cluster", site=~"$site"}}',
                    "kwatth", (16, 12, 8, 8)),
        series_panel("CPU power (RAPL)", "Accounted CPU zones where the device has RAPL "
                     "(node:gpu_carbon_cpu_power_watts:sum_rate5m).",
                     [(f"{NODE__CPU_POWER_WATTS__SUM_RATE5M}{{{EDGE}}}", "{{node}}")], "watt", (0, 20, 12, 8)),
        series_panel("Other sensors and whole-device meters", "Devices measured by a generic hwmon sensor "
                     "(gpu_carbon_hwmon_energy_joules_total), or as a whole by a sensor on their input or their "
                     "battery's discharge power (gpu_carbon_node_energy_joules_total, source label: the battery "
                     "reads 0 while charging, docs/edge.md).",
                     [(f"sum by (node, driver, label, source) (rate({_other_energy()}[$__rate_interval]))",
                       "{{node}} {{driver}}{{source}} {{label}}")],
                     "watt", (0, 28, 24, 8)),
        table_panel("Last sample age", "Seconds since each edge collector last ran "
                    "(gpu_carbon_collector_last_run_age_seconds): old means a stuck or offline device.",
                    f"{COLLECTOR_LAST_RUN_AGE_SECONDS}{{{EDGE}}}", "s", (12, 20, 12, 8)),
    ]


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard(TITLE).uid(UID).tags(["gpu-carbon"]).refresh("1m").time("now-24h", "now")
             .description("Edge fleet: devices online, power, energy and carbon per device and site, rails.")
             .link(link("Datacenter fleet", "gpu-carbon-fleet")))
    board = variables(board, fleet="edge")
    for p in panels():
        board = board.with_panel(p)
    return board

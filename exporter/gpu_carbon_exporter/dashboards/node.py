"""Node / GPU: per-GPU power against its limit, temperature, utilisation, memory and clocks;
the exporter's own health: collectors, sample age, counter resets, intensity provider errors."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from ..names import (
    COLLECTOR_LAST_RUN_AGE_SECONDS, COLLECTOR_SUCCESS, GPU_ENERGY_JOULES_TOTAL, GPU_INFO, GPU_MEMORY_USED_BYTES,
    GPU_POWER_LIMIT_WATTS, GPU_POWER_WATTS, GPU_SM_CLOCK_HERTZ, GPU_TEMPERATURE_CELSIUS, GPU_UTILIZATION_RATIO,
    INTENSITY_PROVIDER_ERRORS_TOTAL, INTENSITY_PROVIDER_UP,
)
from . import vendors
from .common import ANY, NODES, UP, link, query_variable, series_panel, table_panel, variables

UID = "gpu-carbon-node"
TITLE = "GPU carbon / Node and GPU"
GPU = NODES + ', gpu=~"$gpu"'
LEGEND = "{{node}} GPU {{gpu}}"


def panels() -> list:
    return [
        series_panel("GPU power and limit", "Power the driver reports (gpu_carbon_gpu_power_watts) and the enforced "
                     "limit (gpu_carbon_gpu_power_limit_watts).",
                     [(f"{GPU_POWER_WATTS}{{{GPU}}}", LEGEND),
                      (f"{GPU_POWER_LIMIT_WATTS}{{{GPU}}}", LEGEND + " limit")], "watt", (0, 0, 12, 8)),
        series_panel("Utilisation", "Fraction of time a kernel ran (gpu_carbon_gpu_utilization_ratio).",
                     [(f"{GPU_UTILIZATION_RATIO}{{{GPU}}}", LEGEND)], "percentunit", (12, 0, 12, 8)),
        series_panel("Temperature", "GPU temperature (gpu_carbon_gpu_temperature_celsius).",
                     [(f"{GPU_TEMPERATURE_CELSIUS}{{{GPU}}}", LEGEND)], "celsius", (0, 8, 8, 8)),
        series_panel("Memory used", "Device memory in use (gpu_carbon_gpu_memory_used_bytes).",
                     [(f"{GPU_MEMORY_USED_BYTES}{{{GPU}}}", LEGEND)], "bytes", (8, 8, 8, 8)),
        series_panel("SM clock", "Streaming multiprocessor clock (gpu_carbon_gpu_sm_clock_hertz).",
                     [(f"{GPU_SM_CLOCK_HERTZ}{{{GPU}}}", LEGEND)], "hertz", (16, 8, 8, 8)),
        table_panel("Collectors", "Whether each device source reached its devices in its last sample "
                    "(gpu_carbon_collector_success, 1 = yes).", f"{COLLECTOR_SUCCESS}{{{NODES}}}",
                    "none", (0, 16, 8, 8)),
        series_panel("Sample age", "Seconds since each collector last ran (gpu_carbon_collector_last_run_age_seconds); "
                     "it should stay near the sampling interval.",
                     [(f"{COLLECTOR_LAST_RUN_AGE_SECONDS}{{{NODES}}}", "{{node}} {{collector}}")], "s",
                     (8, 16, 8, 8)),
        table_panel("Counter resets", "Resets of the GPU energy counters over the dashboard range: 0 unless the "
                    "exporter lost its state (resets(gpu_carbon_gpu_energy_joules_total[$__range])).",
                    f"resets({GPU_ENERGY_JOULES_TOTAL}{{{GPU}}}[$__range])", "none", (16, 16, 8, 8),
                    thresholds=ANY),
        series_panel("Intensity provider errors", "Failed requests to a live intensity API per second, by reason "
                     "(gpu_carbon_intensity_provider_errors_total); empty with a static intensity.",
                     [(f"rate({INTENSITY_PROVIDER_ERRORS_TOTAL}{{{NODES}}}[$__rate_interval])",
                       "{{node}} {{provider}} {{reason}}")], "reqps", (0, 24, 16, 8)),
        table_panel("Intensity provider", "Whether each node's intensity provider answered its latest poll or read "
                    "(gpu_carbon_intensity_provider_up, 1 = yes; static sources always 1). At 0 the last good value, "
                    "then the configured fallback, is served: emissions are degraded, not stopped "
                    "(GpuCarbonIntensityProviderFailing; the device sources are in Collectors).",
                    f"{INTENSITY_PROVIDER_UP}{{{NODES}}}", "none", (16, 24, 8, 8), thresholds=UP),
        *vendors.node_panels(NODES, 32),
    ]


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard(TITLE).uid(UID).tags(["gpu-carbon"]).refresh("30s").time("now-6h", "now")
             .description("One node's GPUs and the exporter's health.")
             .link(link("Datacenter fleet", "gpu-carbon-fleet")))
    board = variables(board)
    board = board.with_variable(query_variable(
        "gpu", "GPU", f'label_values({GPU_INFO}{{cluster=~"$cluster", site=~"$site", node=~"$node"}}, gpu)'))
    for p in panels():
        board = board.with_panel(p)
    return board

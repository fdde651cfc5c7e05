"""Every metric family name, the recording-rule names read outside the rules generator, and the unit
conversions, each defined once: the exporter, the rules generator, the dashboards and the report
import them from here.

Names are full literal strings so that ``grep gpu_carbon_board_power_watts`` finds where a family
is defined, including the families of each device kind (``DEVICE_FAMILIES``), which the collector
would otherwise build at run time. A constant's name is the family's without the ``gpu_carbon_``
prefix, upper-cased (``GPU_POWER_WATTS``); a counter's ends in ``_TOTAL``, as exposed and queried
(prometheus_client strips the suffix from a counter family's name and adds it back).
A recording rule's constant is its name with ``gpu_carbon_`` dropped and each ``:`` as ``__``
(``NODE__POWER_WATTS__SUM_IRATE``). Where readers pick the window (settings, or one panel per
window), the constant ends before the window and the reader appends it (``…__INCREASE + "7d"``).

tests/test_names.py holds this module to the golden exposition, docs/metrics.md and the rule
files, so a renamed family or rule cannot drift. This is a bottom module: it imports nothing
of the package.
"""
from __future__ import annotations

from dataclasses import dataclass

PREFIX = "gpu_carbon"

# -- Units ------------------------------------------------------------------------------------
# Sources report native units (mW, mJ, MHz, %); they become base units (W, J, Hz, ratio 0-1)
# once, with these (sources/base.py says where). Intensity is quoted in gCO2e/kWh by every
# provider, so it becomes g/J with JOULES_PER_KWH; kWh, kg and hours are for people (rules,
# dashboards, the report), never for the exposition.
MILLI = 1e-3  # mW -> W, mJ -> J
PERCENT = 1e-2  # percent -> ratio
MEGA = 1e6  # MHz -> Hz
SECONDS_PER_HOUR = 3600
GRAMS_PER_KG = 1000
WH_PER_KWH = 1000
JOULES_PER_WH = SECONDS_PER_HOUR  # a watt for an hour
JOULES_PER_KWH = float(WH_PER_KWH * JOULES_PER_WH)  # a kilowatt for an hour; the one spelling of 3.6 MJ

# -- Exporter families (docs/metrics.md) --------------------------------------------------------
# Identity and build
BUILD_INFO = "gpu_carbon_build_info"
SOURCE_INFO = "gpu_carbon_source_info"
GPU_INFO = "gpu_carbon_gpu_info"
MIG_INSTANCE_INFO = "gpu_carbon_mig_instance_info"

# Per-GPU readings
GPU_UP = "gpu_carbon_gpu_up"
GPU_POWER_WATTS = "gpu_carbon_gpu_power_watts"
GPU_POWER_INSTANT_WATTS = "gpu_carbon_gpu_power_instant_watts"
GPU_POWER_AVERAGE_WATTS = "gpu_carbon_gpu_power_average_watts"
GPU_UTILIZATION_RATIO = "gpu_carbon_gpu_utilization_ratio"
GPU_MEMORY_UTILIZATION_RATIO = "gpu_carbon_gpu_memory_utilization_ratio"
GPU_MEMORY_USED_BYTES = "gpu_carbon_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL_BYTES = "gpu_carbon_gpu_memory_total_bytes"
GPU_TEMPERATURE_CELSIUS = "gpu_carbon_gpu_temperature_celsius"
GPU_SM_CLOCK_HERTZ = "gpu_carbon_gpu_sm_clock_hertz"
GPU_POWER_LIMIT_WATTS = "gpu_carbon_gpu_power_limit_watts"

# Per-GPU energy and carbon
GPU_ENERGY_JOULES_TOTAL = "gpu_carbon_gpu_energy_joules_total"
GPU_EMISSIONS_GRAMS_TOTAL = "gpu_carbon_gpu_emissions_grams_total"
GPU_EMISSION_RATE_GRAMS_PER_SECOND = "gpu_carbon_gpu_emission_rate_grams_per_second"
GPU_EMBODIED_EMISSIONS_GRAMS_TOTAL = "gpu_carbon_gpu_embodied_emissions_grams_total"
GPU_WATER_LITERS_TOTAL = "gpu_carbon_gpu_water_liters_total"


@dataclass(frozen=True)
class DeviceFamilies:
    """The families every device kind has (docs/metrics.md, "Edge boards, power rails, …")."""

    up: str
    power: str  # W
    energy: str  # J, counter
    emissions: str  # gCO2e, counter; accounted devices only
    utilization: str  # GPU load, 0-1; only devices that report one (a Jetson board)


# The GPU's are its own families above; the other kinds' are named gpu_carbon_<kind>_<family>
# (``kind_families`` builds that name only for a kind a plug-in adds).
DEVICE_FAMILIES: dict[str, DeviceFamilies] = {
    "gpu": DeviceFamilies(GPU_UP, GPU_POWER_WATTS, GPU_ENERGY_JOULES_TOTAL, GPU_EMISSIONS_GRAMS_TOTAL,
                          GPU_UTILIZATION_RATIO),
    "board": DeviceFamilies("gpu_carbon_board_up", "gpu_carbon_board_power_watts",
                            "gpu_carbon_board_energy_joules_total", "gpu_carbon_board_emissions_grams_total",
                            "gpu_carbon_board_gpu_utilization_ratio"),
    "rail": DeviceFamilies("gpu_carbon_rail_up", "gpu_carbon_rail_power_watts",
                           "gpu_carbon_rail_energy_joules_total", "gpu_carbon_rail_emissions_grams_total",
                           "gpu_carbon_rail_gpu_utilization_ratio"),
    "cpu": DeviceFamilies("gpu_carbon_cpu_up", "gpu_carbon_cpu_power_watts",
                          "gpu_carbon_cpu_energy_joules_total", "gpu_carbon_cpu_emissions_grams_total",
                          "gpu_carbon_cpu_gpu_utilization_ratio"),
    "node": DeviceFamilies("gpu_carbon_node_up", "gpu_carbon_node_power_watts",
                           "gpu_carbon_node_energy_joules_total", "gpu_carbon_node_emissions_grams_total",
                           "gpu_carbon_node_gpu_utilization_ratio"),
    "hwmon": DeviceFamilies("gpu_carbon_hwmon_up", "gpu_carbon_hwmon_power_watts",
                            "gpu_carbon_hwmon_energy_joules_total", "gpu_carbon_hwmon_emissions_grams_total",
                            "gpu_carbon_hwmon_gpu_utilization_ratio"),
    "network": DeviceFamilies("gpu_carbon_network_up", "gpu_carbon_network_power_watts",
                              "gpu_carbon_network_energy_joules_total", "gpu_carbon_network_emissions_grams_total",
                              "gpu_carbon_network_gpu_utilization_ratio"),
    "storage": DeviceFamilies("gpu_carbon_storage_up", "gpu_carbon_storage_power_watts",
                              "gpu_carbon_storage_energy_joules_total", "gpu_carbon_storage_emissions_grams_total",
                              "gpu_carbon_storage_gpu_utilization_ratio"),
}


def kind_families(kind: str) -> DeviceFamilies:
    """The families of a device kind: from the table, or for a kind a plug-in adds, named after it
    (the one family name built at run time; a plug-in's kind is not known here)."""
    known = DEVICE_FAMILIES.get(kind)
    if known is not None:
        return known
    name = f"{PREFIX}_{kind}"
    return DeviceFamilies(f"{name}_up", f"{name}_power_watts", f"{name}_energy_joules_total",
                          f"{name}_emissions_grams_total", f"{name}_gpu_utilization_ratio")


BOARD = DEVICE_FAMILIES["board"]
RAIL = DEVICE_FAMILIES["rail"]
CPU = DEVICE_FAMILIES["cpu"]
NODE = DEVICE_FAMILIES["node"]
HWMON = DEVICE_FAMILIES["hwmon"]
NETWORK = DEVICE_FAMILIES["network"]
STORAGE = DEVICE_FAMILIES["storage"]

# The rest of a whole-node meter's reading: what its GPUs and CPUs did not measure
NODE_REST_ENERGY_JOULES_TOTAL = "gpu_carbon_node_rest_energy_joules_total"
NODE_REST_POWER_WATTS = "gpu_carbon_node_rest_power_watts"


def rest_family(kind: str) -> str:
    """The rest counter of a whole-node kind: the built-in one's literal, a plug-in's named after it."""
    return NODE_REST_ENERGY_JOULES_TOTAL if kind == "node" else f"{PREFIX}_{kind}_rest_energy_joules_total"

# Jobs
JOB_INFO = "gpu_carbon_job_info"
JOB_GPU_INFO = "gpu_carbon_job_gpu_info"
JOB_ENERGY_JOULES_TOTAL = "gpu_carbon_job_energy_joules_total"
JOB_EMISSIONS_GRAMS_TOTAL = "gpu_carbon_job_emissions_grams_total"
JOB_GPU_SECONDS_TOTAL = "gpu_carbon_job_gpu_seconds_total"
JOB_WORK_UNITS_TOTAL = "gpu_carbon_job_work_units_total"
JOB_START_TIME_SECONDS = "gpu_carbon_job_start_time_seconds"
JOB_END_TIME_SECONDS = "gpu_carbon_job_end_time_seconds"
JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL = "gpu_carbon_job_embodied_emissions_grams_total"
JOB_WATER_LITERS_TOTAL = "gpu_carbon_job_water_liters_total"

# What no job paid for, per GPU, so that jobs plus these add up to the GPU
GPU_UNALLOCATED_ENERGY_JOULES_TOTAL = "gpu_carbon_gpu_unallocated_energy_joules_total"
GPU_UNALLOCATED_EMISSIONS_GRAMS_TOTAL = "gpu_carbon_gpu_unallocated_emissions_grams_total"
GPU_IDLE_ENERGY_JOULES_TOTAL = "gpu_carbon_gpu_idle_energy_joules_total"
GPU_IDLE_EMISSIONS_GRAMS_TOTAL = "gpu_carbon_gpu_idle_emissions_grams_total"
GPU_UNATTRIBUTED_ENERGY_JOULES_TOTAL = "gpu_carbon_gpu_unattributed_energy_joules_total"
GPU_UNATTRIBUTED_EMISSIONS_GRAMS_TOTAL = "gpu_carbon_gpu_unattributed_emissions_grams_total"
GPU_ATTRIBUTION_INFO = "gpu_carbon_gpu_attribution_info"

# Carbon inputs
GRID_INTENSITY_GRAMS_PER_KWH = "gpu_carbon_grid_intensity_grams_per_kwh"
GRID_INTENSITY_FALLBACK = "gpu_carbon_grid_intensity_fallback"
GRID_INTENSITY_SOURCE_INFO = "gpu_carbon_grid_intensity_source_info"
GRID_INTENSITY_AGE_SECONDS = "gpu_carbon_grid_intensity_age_seconds"
INTENSITY_PROVIDER_UP = "gpu_carbon_intensity_provider_up"
INTENSITY_PROVIDER_REQUESTS_TOTAL = "gpu_carbon_intensity_provider_requests_total"
INTENSITY_PROVIDER_SUCCESSES_TOTAL = "gpu_carbon_intensity_provider_successes_total"
INTENSITY_PROVIDER_ERRORS_TOTAL = "gpu_carbon_intensity_provider_errors_total"
GRID_INTENSITY_FORECAST_MIN_GRAMS_PER_KWH = "gpu_carbon_grid_intensity_forecast_min_grams_per_kwh"
GRID_INTENSITY_FORECAST_MEAN_GRAMS_PER_KWH = "gpu_carbon_grid_intensity_forecast_mean_grams_per_kwh"
GRID_INTENSITY_LOWEST_WINDOW_START_SECONDS = "gpu_carbon_grid_intensity_lowest_window_start_seconds"
PUE_RATIO = "gpu_carbon_pue_ratio"

# Exporter health
COLLECTOR_SUCCESS = "gpu_carbon_collector_success"
COLLECTOR_DURATION_SECONDS = "gpu_carbon_collector_duration_seconds"
COLLECTOR_LAST_RUN_AGE_SECONDS = "gpu_carbon_collector_last_run_age_seconds"
SCRAPE_ERRORS_TOTAL = "gpu_carbon_scrape_errors_total"
STATE_DISCARDED_ENTRIES = "gpu_carbon_state_discarded_entries"
STATE_WRITE_FAILURES_TOTAL = "gpu_carbon_state_write_failures_total"

# -- Recording rules read by the dashboards, the alerts and the budget rules (docs/rules.md) ------
# The rules generator (mixin/recording.py) composes the names from level, metric and operations;
# tests/test_names.py checks that it records every name here.
GPU__POWER_WATTS__RATE = "gpu:gpu_carbon_power_watts:rate"  # + the rate window
GPU__POWER_WATTS__IRATE = "gpu:gpu_carbon_power_watts:irate"
NODE__POWER_WATTS__SUM_IRATE = "node:gpu_carbon_power_watts:sum_irate"
NODE__POWER_WATTS__SUM_RATE5M = "node:gpu_carbon_power_watts:sum_rate5m"
NODE__EMISSION_RATE_GRAMS_PER_SECOND__SUM_IRATE = "node:gpu_carbon_emission_rate_grams_per_second:sum_irate"
NODE__BOARD_POWER_WATTS__SUM_RATE5M = "node:gpu_carbon_board_power_watts:sum_rate5m"
NODE__RAIL_POWER_WATTS__SUM_RATE5M = "node:gpu_carbon_rail_power_watts:sum_rate5m"
NODE__CPU_POWER_WATTS__SUM_RATE5M = "node:gpu_carbon_cpu_power_watts:sum_rate5m"
NODE__GRID_INTENSITY_GRAMS_PER_KWH__TOPK1 = "node:gpu_carbon_grid_intensity_grams_per_kwh:topk1"
NODE__GPU_UNALLOCATED_ENERGY_RATIO__RATE = "node:gpu_carbon_gpu_unallocated_energy_ratio:rate"  # + waste window
NODE__GPU_IDLE_ENERGY_RATIO__RATE = "node:gpu_carbon_gpu_idle_energy_ratio:rate"  # + waste window
NODE__GPU_UNATTRIBUTED_ENERGY_RATIO__RATE = "node:gpu_carbon_gpu_unattributed_energy_ratio:rate"  # + waste window
VENDOR__GPU_UNALLOCATED_ENERGY_RATIO__RATE = "vendor:gpu_carbon_gpu_unallocated_energy_ratio:rate"  # + waste window
VENDOR__GPU_IDLE_ENERGY_RATIO__RATE = "vendor:gpu_carbon_gpu_idle_energy_ratio:rate"  # + waste window
MODEL__GPU_ENERGY_PER_GPU_HOUR_KWH__AVG_RATE = "model:gpu_carbon_gpu_energy_per_gpu_hour_kwh:avg_rate"  # + waste window
NODE__JOB_INFO__COUNT = "node:gpu_carbon_job_info:count"
JOB__JOB_INFO__DEDUP = "job:gpu_carbon_job_info:dedup"
# Windows: + the window ("1d")
SITE__ENERGY_KWH__INCREASE = "site:gpu_carbon_energy_kwh:increase"
SITE__EMISSIONS_GRAMS__INCREASE = "site:gpu_carbon_emissions_grams:increase"
SITE__BOARD_ENERGY_KWH__INCREASE = "site:gpu_carbon_board_energy_kwh:increase"
JOB__JOB_EMISSIONS_GRAMS__INCREASE = "job:gpu_carbon_job_emissions_grams:increase"
TEAM__JOB_EMISSIONS_GRAMS__INCREASE = "team:gpu_carbon_job_emissions_grams:increase"
TEAM__JOB_ENERGY_KWH__INCREASE = "team:gpu_carbon_job_energy_kwh:increase"
TEAM__JOB_GPU_HOURS__INCREASE = "team:gpu_carbon_job_gpu_hours:increase"

# Budgets (written by mixin/budget_rules.py from a budgets file)
BUDGET__BUDGET_LIMIT__VALUE = "budget:gpu_carbon_budget_limit:value"
BUDGET__BUDGET_WARNING__RATIO = "budget:gpu_carbon_budget_warning:ratio"
BUDGET__BUDGET_USAGE__INCREASE = "budget:gpu_carbon_budget_usage:increase"
BUDGET__BUDGET_USAGE__UPPER_INCREASE = "budget:gpu_carbon_budget_usage:upper_increase"
BUDGET__BUDGET_USAGE__RATIO = "budget:gpu_carbon_budget_usage:ratio"
BUDGET__BUDGET_USAGE__PREDICT_LINEAR = "budget:gpu_carbon_budget_usage:predict_linear"
BUDGET__BUDGET_BURN_RATE__RATIO_INCREASE = "budget:gpu_carbon_budget_burn_rate:ratio_increase"  # + tier window
BUDGET__BUDGET_TIME_LEFT_SECONDS__RATE_INCREASE = "budget:gpu_carbon_budget_time_left_seconds:rate_increase"  # + window

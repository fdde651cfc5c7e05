"""Vendors side by side: the fleet's and a node's GPUs by vendor (NVIDIA, AMD, Intel) — power,
energy, utilisation and waste — and each GPU model's kWh per GPU-hour across vendors.

Every vendor's GPUs are the one kind ``gpu`` and their families carry ``vendor`` (docs/metrics.md):
these panels only group by it. The totals elsewhere on the dashboards sum every vendor alike.
"""
from __future__ import annotations

from ..names import (
    GPU__POWER_WATTS__RATE, GPU_ENERGY_JOULES_TOTAL, GPU_UTILIZATION_RATIO,
    MODEL__GPU_ENERGY_PER_GPU_HOUR_KWH__AVG_RATE, VENDOR__GPU_IDLE_ENERGY_RATIO__RATE,
    VENDOR__GPU_UNALLOCATED_ENERGY_RATIO__RATE,
)
from .common import kwh, series_panel, table_panel

# The vendor and model rules keep the fleet only (mixin/recording.py: a few series per fleet).
FLEET = 'fleet=~"$fleet"'
WASTE_WINDOW = "1h"


def _power(sel: str, pos: tuple[int, int, int, int]):
    return series_panel("Power by vendor", "GPU power per vendor from the energy counters, 5-minute averages "
                        "(gpu:gpu_carbon_power_watts:rate5m summed by vendor).",
                        [(f"sum by (vendor) ({GPU__POWER_WATTS__RATE}5m{{{sel}}})", "{{vendor}}")], "watt", pos)


def _utilisation(sel: str, pos: tuple[int, int, int, int]):
    return series_panel("GPU utilisation by vendor", "Mean fraction of time a kernel ran, over each vendor's "
                        "GPUs (gpu_carbon_gpu_utilization_ratio: NVML's GPU utilisation, amdgpu's "
                        "gpu_busy_percent, the busiest engine class of an Intel GPU's DRM clients; docs/gpus.md).",
                        [(f"avg by (vendor) ({GPU_UTILIZATION_RATIO}{{{sel}}})", "{{vendor}}")], "percentunit", pos)


def _energy(sel: str, pos: tuple[int, int, int, int]):
    return table_panel("GPU energy by vendor, dashboard range", "increase() of each vendor's GPU energy "
                       "counters over the dashboard's time range, in kWh (gpu_carbon_gpu_energy_joules_total).",
                       kwh(f"sum by (vendor) (increase({GPU_ENERGY_JOULES_TOTAL}{{{sel}}}[$__range]))"),
                       "kwatth", pos)


def fleet_panels(targets: str, y: int) -> list:
    """The fleet dashboard's vendor rows, from ``y`` down (16 high)."""
    w = WASTE_WINDOW
    return [
        _power(targets, (0, y, 8, 8)),
        _utilisation(targets, (8, y, 8, 8)),
        _energy(targets, (16, y, 8, 8)),
        series_panel("Waste by vendor", "Share of each vendor's GPU energy used while no job held the GPU "
                     "(allocated view) and idle (active view), over the last hour "
                     f"({VENDOR__GPU_UNALLOCATED_ENERGY_RATIO__RATE}{w}, {VENDOR__GPU_IDLE_ENERGY_RATIO__RATE}{w}).",
                     [(f"{VENDOR__GPU_UNALLOCATED_ENERGY_RATIO__RATE}{w}{{{FLEET}}}", "unallocated {{vendor}}"),
                      (f"{VENDOR__GPU_IDLE_ENERGY_RATIO__RATE}{w}{{{FLEET}}}", "idle {{vendor}}")],
                     "percentunit", (0, y + 8, 12, 8)),
        table_panel("Energy per GPU-hour by model", "Each GPU model's kWh per GPU-hour across vendors: its mean "
                    f"power per GPU over the last hour, in kW ({MODEL__GPU_ENERGY_PER_GPU_HOUR_KWH__AVG_RATE}{w}; "
                    "the model is gpu_carbon_gpu_info's name; a GPU that is down counts its hours at 0 W).",
                    f"sort_desc({MODEL__GPU_ENERGY_PER_GPU_HOUR_KWH__AVG_RATE}{w}{{{FLEET}}})",
                    "suffix: kWh/GPU-h", (12, y + 8, 12, 8)),
    ]


def node_panels(nodes: str, y: int) -> list:
    """The node dashboard's vendor row at ``y`` (8 high): a mixed node's vendors side by side."""
    return [_power(nodes, (0, y, 8, 8)), _utilisation(nodes, (8, y, 8, 8)), _energy(nodes, (16, y, 8, 8))]

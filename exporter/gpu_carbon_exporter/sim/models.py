"""The simulated GPU models: what each draws and holds, and how its vendor's driver shows it.

NVIDIA models are read through the simulated NVML (``nvml.py``); AMD models, those with an
``AmdBoard``, through the fake amdgpu sysfs tree (``amdgpu.py``). A scenario names a model, or gives
``idle_w`` and ``max_w`` for one of its own (docs/scenario.md).
"""
from __future__ import annotations

from dataclasses import dataclass

# The gpu_metrics revisions the simulated amdgpu driver writes (sim/amdgpu.py).
GPU_METRICS_REVISIONS = ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.8")


@dataclass(frozen=True)
class AmdBoard:
    """How an AMD card shows itself in sysfs."""

    device_id: int  # PCI device id (libdrm's amdgpu.ids names it)
    revision_id: int
    gpu_metrics: str | None  # the table's revision ("1.3", "1.8"); None: no gpu_metrics file
    # 32: the firmware's u32 accumulator, zero-extended (MI100, Navi, RDNA), wraps at 2^32 counts.
    counter_bits: int = 64
    power_file: str = "power1_input"  # or "power1_average" (older ASICs)
    fru: bool = True  # a server card's FRU EEPROM gives product_name; consumer cards have none


@dataclass(frozen=True)
class DeviceModel:
    name: str
    idle_w: float
    max_w: float
    memory_bytes: int
    # NVIDIA: NVML's energy counter. AMD: gpu_metrics' energy_accumulator (False: it reads all ones).
    energy_counter: bool = True
    # What nvmlDeviceGetPowerUsage returns: "average_1s" or "instant".
    power_usage: str = "average_1s"
    max_sm_mhz: int = 1980
    # NVML field values POWER_INSTANT / POWER_AVERAGE (absent before Volta).
    power_fields: bool = True
    amd: AmdBoard | None = None  # an AMD card, read through the amdgpu sysfs tree

    @property
    def vendor(self) -> str:
        return "amd" if self.amd is not None else "nvidia"


MODELS = {m.name: m for m in [
    DeviceModel("NVIDIA H100 80GB HBM3", 70, 700, 80 * 2**30),
    DeviceModel("NVIDIA H200", 75, 700, 141 * 10**9),
    DeviceModel("NVIDIA A100-SXM4-80GB", 55, 400, 80 * 2**30, power_usage="instant", max_sm_mhz=1410),
    DeviceModel("NVIDIA L40S", 35, 350, 48 * 2**30, max_sm_mhz=2520),
    DeviceModel("Tesla V100-SXM2-32GB", 40, 300, 32 * 2**30, power_usage="instant", max_sm_mhz=1530),
    DeviceModel("Tesla P100-PCIE-16GB", 30, 250, 16 * 2**30, energy_counter=False,
                power_usage="instant", max_sm_mhz=1328, power_fields=False),
    # MI300X (OAM, 750 W): gpu_metrics v1_8 on current kernels, 64-bit accumulator, power1_input only.
    DeviceModel("AMD Instinct MI300X", 140, 750, 192 * 2**30, max_sm_mhz=2100,
                amd=AmdBoard(0x74A1, 0x00, "1.8")),
    # MI100 (PCIe, 300 W): v1_3 over the firmware's 32-bit accumulator; power1_average only.
    DeviceModel("AMD Instinct MI100", 35, 300, 32 * 2**30, max_sm_mhz=1502,
                amd=AmdBoard(0x738C, 0x01, "1.3", counter_bits=32, power_file="power1_average")),
    # RX 9070 XT (RDNA4, 304 W): v1_3 whose energy_accumulator the driver leaves all ones; power1_input.
    DeviceModel("AMD Radeon RX 9070 XT", 12, 304, 16 * 2**30, energy_counter=False, max_sm_mhz=2970,
                amd=AmdBoard(0x7550, 0xC0, "1.3", counter_bits=32, fru=False)),
]}

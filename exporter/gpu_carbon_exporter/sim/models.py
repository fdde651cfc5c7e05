"""The simulated GPU models: what each draws and holds, and how its vendor's driver shows it.

NVIDIA models are read through the simulated NVML (``nvml.py``); AMD models, those with an
``AmdBoard``, through the fake amdgpu sysfs tree (``amdgpu.py``); Intel models through a fake xe or
i915 sysfs tree and their jobs' DRM client stats (``intel.py``, whose ``CARDS`` say how each shows on
the bus). A scenario names a model, or gives ``idle_w`` and ``max_w`` for one of its own
(docs/scenario.md); ``read_model`` and ``read_driver`` read a device entry's model keys.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .reader import Reader

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
    # Who made it (VENDORS): "nvidia" GPUs are served by the simulated NVML, "amd" ones (with a board)
    # by the fake amdgpu tree, "intel" ones by a fake xe or i915 tree and their jobs' DRM client stats.
    vendor: str = "nvidia"

    def __post_init__(self) -> None:
        if (self.amd is not None) != (self.vendor == "amd"):
            raise ValueError(f"{self.name}: an AMD model has an AmdBoard, and only an AMD model has one")


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
                amd=AmdBoard(0x74A1, 0x00, "1.8"), vendor="amd"),
    # MI100 (PCIe, 300 W): v1_3 over the firmware's 32-bit accumulator; power1_average only.
    DeviceModel("AMD Instinct MI100", 35, 300, 32 * 2**30, max_sm_mhz=1502,
                amd=AmdBoard(0x738C, 0x01, "1.3", counter_bits=32, power_file="power1_average"), vendor="amd"),
    # RX 9070 XT (RDNA4, 304 W): v1_3 whose energy_accumulator the driver leaves all ones; power1_input.
    DeviceModel("AMD Radeon RX 9070 XT", 12, 304, 16 * 2**30, energy_counter=False, max_sm_mhz=2970,
                amd=AmdBoard(0x7550, 0xC0, "1.3", counter_bits=32, fru=False), vendor="amd"),
    # The names the Intel source gives their PCI device ids (sources/intel_gpu.py MODELS).
    DeviceModel("Intel Data Center GPU Max 1550", 95, 600, 128 * 2**30, max_sm_mhz=1600, vendor="intel"),
    DeviceModel("Intel Data Center GPU Max 1100", 60, 300, 48 * 2**30, max_sm_mhz=1550, vendor="intel"),
    DeviceModel("Intel Arc B580", 15, 190, 12 * 2**30, max_sm_mhz=2850, vendor="intel"),
]}
# The drivers a simulated GPU of each vendor may be bound to, the default first.
DRIVERS = {"nvidia": ("nvidia",), "amd": ("amdgpu",), "intel": ("xe", "i915")}
VENDORS = tuple(DRIVERS)
# A scenario's own model may be NVIDIA's or AMD's; Intel cards are the known models (intel.py CARDS).
OWN_MODEL_VENDORS = ("nvidia", "amd")

AMD_UNIQUE_ID = 0x5E3A_0000_0000_0000
# A scenario's own AMD model (vendor: amd, not in MODELS): a v1_3 card over a 32-bit firmware counter.
GENERIC_AMD = AmdBoard(0x7FFF, 0x00, "1.3", counter_bits=32)


def read_model(d: Reader) -> DeviceModel:
    """A device entry's model: a known one, or the entry's own (idle_w and max_w), with its overrides."""
    model_name = d.get("model", str)
    base_model = MODELS.get(model_name)
    vendor = d.get("vendor", str, base_model.vendor if base_model else "nvidia")
    if vendor not in VENDORS:
        d.fail(f"must be {', '.join(VENDORS[:-1])} or {VENDORS[-1]}", "vendor")
    if base_model is None:
        if "idle_w" not in d.data or "max_w" not in d.data:
            d.fail(f"unknown model {model_name!r:.60}: give idle_w and max_w (known models: "
                   f"{', '.join(MODELS)})", "model")
        if vendor not in OWN_MODEL_VENDORS:
            d.fail(f"a model of the scenario's own is nvidia or amd; Intel cards are the known models "
                   f"({', '.join(m.name for m in MODELS.values() if m.vendor == vendor)})", "vendor")
        base_model = DeviceModel(model_name, d.get("idle_w", float), d.get("max_w", float), 16 * 2**30,
                                 amd=GENERIC_AMD if vendor == "amd" else None, vendor=vendor)
    elif vendor != base_model.vendor:
        d.fail(f"{model_name} is an {base_model.vendor} model", "vendor")
    model = replace(
        base_model, idle_w=d.get("idle_w", float, base_model.idle_w, minimum=0),
        max_w=d.get("max_w", float, base_model.max_w, minimum=1),
        energy_counter=d.get("energy_counter", bool, base_model.energy_counter),
        power_usage=d.get("power_usage", str, base_model.power_usage),
        power_fields=d.get("power_fields", bool, base_model.power_fields), amd=_board(d, base_model.amd))
    if model.power_usage not in ("average_1s", "instant"):
        d.fail("must be average_1s or instant", "power_usage")
    if model.vendor != "nvidia" and "mig_instances" in d.data:
        d.fail(f"MIG is NVIDIA's, only for NVIDIA models: {model.name} has no MIG instances"
               + (" (AMD partitions are not simulated)" if model.amd else ""), "mig_instances")
    return model


def read_driver(d: Reader, model: DeviceModel) -> str:
    """The kernel driver a device entry's card is bound to: its vendor's default, or the entry's."""
    drivers = DRIVERS[model.vendor]
    driver = d.get("driver", str, drivers[0])
    if driver not in drivers:
        d.fail(f"must be {' or '.join(drivers)} for {model.name}", "driver")
    return driver


def _board(d: Reader, board: AmdBoard | None) -> AmdBoard | None:
    """An AMD model's board with the entry's gpu_metrics revision ("none": no table)."""
    if "gpu_metrics" not in d.data:
        return board
    if board is None:
        d.fail("only for AMD models (vendor: amd)", "gpu_metrics")
    revision = d.get("gpu_metrics", str)
    if revision not in (*GPU_METRICS_REVISIONS, "none"):
        d.fail(f"must be one of {', '.join(GPU_METRICS_REVISIONS)} or none", "gpu_metrics")
    # v1_0 has a u32 field; from v1_4 only the 64-bit firmware (MI300) writes the table.
    bits = 32 if revision == "1.0" else 64 if revision >= "1.4" else board.counter_bits
    return replace(board, gpu_metrics=None if revision == "none" else revision, counter_bits=bits)

"""A pynvml-shaped library over a scenario.

It returns the real ``pynvml`` structure types and raises the real
``pynvml.NVMLError`` subclasses, so ``NvmlSource`` runs unchanged over it, in
tests and under ``--simulate``. Faults can be injected per device.
"""
from __future__ import annotations

import collections
import math
import threading
from typing import Any, Callable

import pynvml

from .scenario import AVERAGE_WINDOW_S, INSTANT_WINDOW_S, Scenario, SimDevice


class _Handle:
    __slots__ = ("index", "mig")

    def __init__(self, index: int, mig: int | None = None) -> None:
        self.index, self.mig = index, mig


class SimulatedNvml:
    """Emulates the NVML calls the exporter makes. ``clock()`` is scenario time in s."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_FI_DEV_POWER_INSTANT = pynvml.NVML_FI_DEV_POWER_INSTANT
    NVML_FI_DEV_POWER_AVERAGE = pynvml.NVML_FI_DEV_POWER_AVERAGE

    def __init__(self, scenario: Scenario, clock: Callable[[], float],
                 driver_version: str = "560.35.03-sim") -> None:
        self.scenario, self.clock, self.driver_version = scenario, clock, driver_version
        # NVML sees the NVIDIA GPUs only (AMD and Intel ones are read by their own sources): handles index
        # this list, in NVML index order; jobs name scenario indices (dev.index).
        self.devices = [d for d in scenario.devices if d.model.vendor == "nvidia"]
        self.initialized = False
        self.init_error: int | None = None  # e.g. NVML_ERROR_LIBRARY_NOT_FOUND
        self.lost: set[int] = set()
        self.unsupported: set[tuple[int, str]] = set()  # (device index, function name)
        self.counter_base_mj: dict[int, int] = {}  # driver reload: counter restarts here
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    # -- fault injection ------------------------------------------------
    def reload_driver(self, index: int) -> None:
        """Restart the device's energy counter from zero, as a driver reload does."""
        dev = self.devices[index]
        self.counter_base_mj[index] = self._energy_mj_raw(dev)

    # -- helpers ------------------------------------------------------------
    def _enter(self, name: str, handle: _Handle | None = None) -> SimDevice | None:
        with self._lock:
            self.calls[name] += 1
        if not self.initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if handle is None:
            return None
        if handle.index in self.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if (handle.index, name) in self.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self.devices[handle.index]

    def _energy_mj_raw(self, dev: SimDevice) -> int:
        return math.floor(dev.pattern.energy(self.clock()) * 1000.0) + dev.energy_offset_mj

    @staticmethod
    def _mw(watts: float) -> int:
        return int(round(watts * 1000.0))

    # -- init / system -------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._enter("nvmlSystemGetNVMLVersion")
        return "12.560.35-sim"

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.devices):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    # -- identity ------------------------------------------------------------
    def nvmlDeviceGetName(self, h: _Handle) -> str:
        return self._enter("nvmlDeviceGetName", h).model.name

    def nvmlDeviceGetUUID(self, h: _Handle) -> str:
        dev = self._enter("nvmlDeviceGetUUID", h)
        if h.mig is not None:
            return f"MIG-{dev.uuid[4:-4]}{h.mig:04d}"
        return dev.uuid

    def nvmlDeviceGetPciInfo(self, h: _Handle) -> Any:
        dev = self._enter("nvmlDeviceGetPciInfo", h)
        info = pynvml.nvmlPciInfo_t()
        info.busId = f"00000000:{0x18 + dev.index * 0x10:02X}:00.0".encode()
        info.domain, info.bus, info.device = 0, 0x18 + dev.index * 0x10, 0
        return info

    # -- MIG -----------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, h: _Handle) -> list[int]:
        dev = self._enter("nvmlDeviceGetMigMode", h)
        on = 1 if dev.mig_instances else 0
        return [on, on]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetMaxMigDeviceCount", h)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: _Handle, index: int) -> _Handle:
        dev = self._enter("nvmlDeviceGetMigDeviceHandleByIndex", h)
        if index >= dev.mig_instances:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return _Handle(h.index, index)

    def nvmlDeviceGetGpuInstanceId(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetGpuInstanceId", h)
        return 1 + (h.mig or 0)

    def nvmlDeviceGetComputeInstanceId(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetComputeInstanceId", h)
        return 0

    # -- power and energy ----------------------------------------------------
    def nvmlDeviceGetPowerUsage(self, h: _Handle) -> int:
        dev = self._enter("nvmlDeviceGetPowerUsage", h)
        window = AVERAGE_WINDOW_S if dev.model.power_usage == "average_1s" else INSTANT_WINDOW_S
        return self._mw(dev.window_power(self.clock(), window))

    def nvmlDeviceGetTotalEnergyConsumption(self, h: _Handle) -> int:
        dev = self._enter("nvmlDeviceGetTotalEnergyConsumption", h)
        if not dev.model.energy_counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self._energy_mj_raw(dev) - self.counter_base_mj.get(h.index, 0)

    def nvmlDeviceGetFieldValues(self, h: _Handle, field_ids: list[int]) -> Any:
        dev = self._enter("nvmlDeviceGetFieldValues", h)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        t = self.clock()
        for i, fid in enumerate(field_ids):
            values[i].fieldId = fid
            if fid == pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION and dev.model.energy_counter:
                values[i].nvmlReturn = pynvml.NVML_SUCCESS
                values[i].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                values[i].value.ullVal = self._energy_mj_raw(dev) - self.counter_base_mj.get(h.index, 0)
                continue
            window = {pynvml.NVML_FI_DEV_POWER_INSTANT: INSTANT_WINDOW_S,
                      pynvml.NVML_FI_DEV_POWER_AVERAGE: AVERAGE_WINDOW_S}.get(fid)
            if window is None or not dev.model.power_fields:  # pre-Volta: no power fields
                values[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            values[i].nvmlReturn = pynvml.NVML_SUCCESS
            values[i].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            values[i].value.uiVal = self._mw(dev.window_power(t, window))
            values[i].timestamp = int(t * 1e6)
        return values

    def nvmlDeviceGetEnforcedPowerLimit(self, h: _Handle) -> int:
        return self._mw(self._enter("nvmlDeviceGetEnforcedPowerLimit", h).model.max_w)

    # -- processes -----------------------------------------------------------------
    def _active_jobs(self, index: int) -> list[tuple[int, "object"]]:
        """(pid, job) of the jobs running now on the scenario's device ``index``."""
        from .trace import job_pid

        t = self.clock()
        return [(job_pid(j, job.devices.index(index)), job) for j, job in enumerate(self.scenario.jobs)
                if index in job.devices and job.active(t)]

    def nvmlDeviceGetComputeRunningProcesses(self, h: _Handle) -> list:
        dev = self._enter("nvmlDeviceGetComputeRunningProcesses", h)
        used = dev.model.memory_bytes * (0.01 + 0.74 * dev.utilization(self.clock()))
        return [pynvml.nvmlFriendlyObject({
            "pid": pid, "usedGpuMemory": int(used * job.share),
            "gpuInstanceId": 0xFFFFFFFF if job.mig_instance is None else job.mig_instance + 1,
            "computeInstanceId": 0xFFFFFFFF if job.mig_instance is None else 0})
            for pid, job in self._active_jobs(dev.index)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: _Handle) -> list:
        self._enter("nvmlDeviceGetGraphicsRunningProcesses", h)
        return []

    def nvmlDeviceGetProcessUtilization(self, h: _Handle, last_seen_us: int) -> list:
        dev = self._enter("nvmlDeviceGetProcessUtilization", h)
        jobs = self._active_jobs(dev.index)
        if not jobs:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        u, t = dev.utilization(self.clock()), self.clock()
        return [pynvml.c_nvmlProcessUtilizationSample_t(pid=pid, timeStamp=int(t * 1e6) + 1,
                                                         smUtil=round(100 * u * job.share),
                                                         memUtil=round(60 * u * job.share))
                for pid, job in jobs]

    def nvmlDeviceGetAttributes(self, h: _Handle) -> "object":
        dev = self._enter("nvmlDeviceGetAttributes", h)
        sms = 132 // max(dev.mig_instances, 1) if h.mig is not None else 132
        return pynvml.nvmlFriendlyObject({"multiprocessorCount": sms})

    # -- utilisation and the rest ---------------------------------------------
    def nvmlDeviceGetUtilizationRates(self, h: _Handle) -> Any:
        dev = self._enter("nvmlDeviceGetUtilizationRates", h)
        u = dev.utilization(self.clock())
        return pynvml.c_nvmlUtilization_t(gpu=round(100 * u), memory=round(60 * u))

    def nvmlDeviceGetMemoryInfo(self, h: _Handle, version: Any = None) -> Any:
        dev = self._enter("nvmlDeviceGetMemoryInfo", h)
        total = dev.model.memory_bytes
        used = int(total * (0.01 + 0.74 * dev.utilization(self.clock())))
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetTemperature(self, h: _Handle, sensor: int) -> int:
        dev = self._enter("nvmlDeviceGetTemperature", h)
        return int(32 + 45 * dev.utilization(self.clock()))

    def nvmlDeviceGetClockInfo(self, h: _Handle, clock_type: int) -> int:
        dev = self._enter("nvmlDeviceGetClockInfo", h)
        u = dev.utilization(self.clock())
        return int(345 + (dev.model.max_sm_mhz - 345) * min(1.0, 4 * u))

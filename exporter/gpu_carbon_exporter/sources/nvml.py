"""NVIDIA GPUs through NVML (``pynvml`` from the nvidia-ml-py package).

The ``pynvml`` module is injectable, so tests and ``--simulate`` run this very
code over a fake or a simulated library.
"""
from __future__ import annotations

import enum
import logging
import time
from types import ModuleType
from typing import Any, Callable

import pynvml as N  # error and field names only: the library itself loads in nvmlInit, through self._nvml

from ..kinds import Accounting, DeviceKind, register_kind
from ..plugins import SourceContext, register
from .base import (DeviceIdentity, DeviceLost, DeviceReading, DeviceSource,
                   MigInstance, ProcessInfo, SourceUnavailable)

log = logging.getLogger(__name__)

NO_LIBRARY_HINT = (
    "NVML is not available: {err}. Install the NVIDIA driver (it provides "
    "libnvidia-ml.so.1), or run with --simulate to use a simulated GPU fleet.")

# The default kind of a DeviceIdentity: every GPU counts in the node's total.
GPU = register_kind(DeviceKind(name="gpu", label="GPU", doc="GPU", accounting=Accounting.EVERY, order=10))
# Per-process utilisation of a shared GPU is re-read at most this often (s) while its processes stay the same.
PROCESS_UTIL_REFRESH_S = 5.0


class Outcome(enum.Enum):
    """What an NVML error means for the exporter."""

    LOST = "the device is gone (DeviceLost): marked down, retried later"
    UNSUPPORTED = "the query is not supported: dropped for good for this device"
    NO_DATA = "nothing to report now (e.g. no process sample since the last read)"
    FAILED = "this query failed this time: noted in the reading's errors"


# NVML return codes by their pynvml names, and what each means here. Codes not listed: FAILED.
ERRORS: dict[int, Outcome] = {
    N.NVML_ERROR_GPU_IS_LOST: Outcome.LOST,
    N.NVML_ERROR_RESET_REQUIRED: Outcome.LOST,
    N.NVML_ERROR_GPU_NOT_FOUND: Outcome.LOST,
    N.NVML_ERROR_NOT_SUPPORTED: Outcome.UNSUPPORTED,
    N.NVML_ERROR_FUNCTION_NOT_FOUND: Outcome.UNSUPPORTED,  # an older driver without the entry point
    N.NVML_ERROR_NOT_FOUND: Outcome.NO_DATA,
}
# The field values read together with the power usage in one call.
_FIELD_INSTANT = N.NVML_FI_DEV_POWER_INSTANT
_FIELD_AVERAGE = N.NVML_FI_DEV_POWER_AVERAGE
_FIELD_ENERGY = N.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION  # the same mJ counter, batched with the power fields
_VALUE_MEMBERS = {N.NVML_VALUE_TYPE_DOUBLE: "dVal", N.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
                  N.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal", N.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
                  N.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal", N.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
                  N.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal"}


def outcome(err: Any) -> Outcome:
    return ERRORS.get(getattr(err, "value", None), Outcome.FAILED)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field_value(fv: Any) -> int | None:
    """Integer value of an ``nvmlFieldValue_t`` entry, by its value type."""
    if fv.nvmlReturn != N.NVML_SUCCESS:
        return None
    member = _VALUE_MEMBERS.get(fv.valueType)
    return None if member is None else int(getattr(fv.value, member))


class NvmlSource(DeviceSource):
    """Reads every visible GPU; one lost GPU never stops the others."""

    name = "nvml"

    def __init__(self, nvml: ModuleType | Any | None = None, *, read_processes: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if nvml is None:
            import pynvml as nvml  # noqa: PLC0415 - optional at import time
        self._nvml = nvml
        self.read_processes = read_processes
        self.clock = clock
        self._util_cache: dict[int, tuple[frozenset, float, dict[int, int]]] = {}  # index -> (pids, read at, util)
        self._handles: dict[int, Any] = {}
        self._util_seen_us: dict[int, int] = {}
        self._graphics: dict[int, bool] = {}  # GPUs with graphics processes: listed every sample
        self._unidentified: set[int] = set()
        self._unsupported: dict[int, set[str]] = {}
        self._info: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------
    def open(self) -> list[DeviceIdentity]:
        nv = self._nvml
        try:
            nv.nvmlInit()
        except nv.NVMLError as err:
            raise SourceUnavailable(NO_LIBRARY_HINT.format(err=err)) from err
        self._info = {"driver_version": self._optional(nv.nvmlSystemGetDriverVersion),
                      "nvml_version": self._optional(nv.nvmlSystemGetNVMLVersion)}
        devices = []
        for index in range(nv.nvmlDeviceGetCount()):
            try:
                devices.append(self._identify(index))
            except nv.NVMLError as err:
                if outcome(err) is not Outcome.LOST:
                    log.error("GPU %d could not be enumerated, skipping it: %s", index, err)
                    continue
                # Lost before we could read its UUID: report it down under a placeholder identity.
                log.error("GPU %d is lost (%s); reporting it down until the exporter restarts", index, err)
                self._unidentified.add(index)
                devices.append(DeviceIdentity(index=index, uuid=f"unidentified-{index}", name="",
                                              has_energy_counter=False))
        return devices

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as err:
            log.debug("nvmlShutdown: %s", err)

    def info(self) -> dict[str, str]:
        return dict(self._info)

    def _optional(self, fn: Callable[[], Any]) -> str:
        try:
            return _text(fn())
        except (self._nvml.NVMLError, AttributeError):
            return ""

    def _identify(self, index: int) -> DeviceIdentity:
        nv = self._nvml
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        self._handles[index] = handle
        self._unsupported[index] = set()
        try:
            nv.nvmlDeviceGetTotalEnergyConsumption(handle)
            has_counter = True
        except nv.NVMLError as err:
            if outcome(err) is not Outcome.UNSUPPORTED:
                raise
            has_counter = False
        method = "integrated"
        if not has_counter:
            method = "integrated_average" if self._average_field(handle) is not None else "integrated"
            log.info("GPU %d has no energy counter (pre-Volta?): integrating %s", index,
                     "the 1-s average power field" if method == "integrated_average" else "power readings")
        mig_enabled, instances = self._mig(handle)
        return DeviceIdentity(
            index=index, uuid=_text(nv.nvmlDeviceGetUUID(handle)),
            name=_text(nv.nvmlDeviceGetName(handle)),
            pci_bus_id=_text(nv.nvmlDeviceGetPciInfo(handle).busId),
            has_energy_counter=has_counter, mig_enabled=mig_enabled,
            mig_instances=instances, method_without_counter=method)

    def _mig(self, handle: Any) -> tuple[bool, tuple[MigInstance, ...]]:
        nv = self._nvml
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
        except nv.NVMLError:
            return False, ()
        if current != 1:
            return False, ()
        found = []
        for i in range(nv.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            except nv.NVMLError as err:
                if outcome(err) is Outcome.NO_DATA:
                    continue
                raise
            try:
                sm_count = int(nv.nvmlDeviceGetAttributes(mig).multiprocessorCount)
            except (nv.NVMLError, AttributeError):
                sm_count = None
            found.append(MigInstance(
                uuid=_text(nv.nvmlDeviceGetUUID(mig)), index=i,
                gpu_instance_id=self._optional_int(nv.nvmlDeviceGetGpuInstanceId, mig),
                compute_instance_id=self._optional_int(nv.nvmlDeviceGetComputeInstanceId, mig),
                sm_count=sm_count))
        return True, tuple(found)

    def _optional_int(self, fn: Callable[[Any], int], handle: Any) -> int | None:
        try:
            return int(fn(handle))
        except self._nvml.NVMLError:
            return None

    # -- sampling ----------------------------------------------------------
    def _call(self, device: DeviceIdentity, what: str, fn: Callable, *args: Any,
              reading: DeviceReading | None = None) -> Any:
        """One NVML query. NOT_SUPPORTED drops that query for good; a lost GPU raises."""
        if device.index in self._unidentified:
            raise DeviceLost(f"GPU {device.index} was lost before it could be identified; "
                             "restart the exporter once it is back")
        skip = self._unsupported[device.index]
        if what in skip:
            return None
        try:
            return fn(self._handles[device.index], *args)
        except self._nvml.NVMLError as err:
            kind = outcome(err)
            if kind is Outcome.LOST:
                raise DeviceLost(f"GPU {device.index} ({device.uuid}): {err}") from err
            if kind is Outcome.UNSUPPORTED:
                log.info("GPU %d: %s not supported, dropping that metric", device.index, what)
                skip.add(what)
            elif kind is Outcome.FAILED and reading is not None:
                reading.errors.append(f"{what}: {err}")
            return None

    def _average_field(self, handle: Any) -> int | None:
        """The 1-s average power field (mW), or None where the GPU does not offer it."""
        try:
            return _field_value(self._nvml.nvmlDeviceGetFieldValues(handle, [_FIELD_AVERAGE])[0])
        except (self._nvml.NVMLError, AttributeError, IndexError):
            return None

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        """Power for the integration loop: the 1-s average field where the GPU has it (each reading
        covers its whole second), else nvmlDeviceGetPowerUsage."""
        if device.method_without_counter == "integrated_average":
            value = self._call(device, "power_average", self._average, device)
            if value is not None:
                return value
        return self._call(device, "power", self._nvml.nvmlDeviceGetPowerUsage)

    def _average(self, handle: Any, device: DeviceIdentity) -> int | None:
        fv = self._nvml.nvmlDeviceGetFieldValues(handle, [_FIELD_AVERAGE])[0]
        if ERRORS.get(fv.nvmlReturn) is Outcome.LOST:
            raise self._nvml.NVMLError(fv.nvmlReturn)
        return _field_value(fv)

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        nv = self._nvml
        r = DeviceReading()
        if device.index in self._unidentified:
            self._call(device, "identity", None)  # raises DeviceLost
        call = lambda what, fn, *a: self._call(device, what, fn, *a, reading=r)  # noqa: E731
        r.power_mw = call("power", nv.nvmlDeviceGetPowerUsage)
        fields = call("power_fields", nv.nvmlDeviceGetFieldValues, [_FIELD_INSTANT, _FIELD_AVERAGE, _FIELD_ENERGY])
        if fields is not None:
            r.power_instant_mw, r.power_average_mw, energy = (_field_value(f) for f in fields)
            if device.has_energy_counter:
                r.energy_mj = energy
            if r.power_instant_mw is None and r.power_average_mw is None and energy is None:
                self._unsupported[device.index].add("power_fields")
        if device.has_energy_counter and r.energy_mj is None:
            r.energy_mj = call("energy", nv.nvmlDeviceGetTotalEnergyConsumption)
        util = call("utilization", nv.nvmlDeviceGetUtilizationRates)
        if util is not None:
            r.gpu_util_pct, r.memory_util_pct = int(util.gpu), int(util.memory)
        mem = call("memory", nv.nvmlDeviceGetMemoryInfo)
        if mem is not None:
            r.memory_used_bytes, r.memory_total_bytes = int(mem.used), int(mem.total)
        r.temperature_c = call("temperature", nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU)
        r.sm_clock_mhz = call("sm_clock", nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM)
        if slow:
            r.power_limit_mw = call("power_limit", nv.nvmlDeviceGetEnforcedPowerLimit)
        if self.read_processes:
            r.processes = self._processes(device, r, slow)
        return r

    def _processes(self, device: DeviceIdentity, r: DeviceReading, slow: bool) -> list:
        """Compute processes each sample (graphics ones on slow samples: rare on datacenter GPUs), with
        per-process SM utilisation only where several processes share the GPU (it only serves splitting)."""
        nv = self._nvml
        found: dict[int, tuple[int | None, int | None]] = {}
        queries = [("compute_processes", nv.nvmlDeviceGetComputeRunningProcesses)]
        if slow or self._graphics.get(device.index):
            queries.append(("graphics_processes", nv.nvmlDeviceGetGraphicsRunningProcesses))
        for what, fn in queries:
            procs = self._call(device, what, fn, reading=r) or []
            if what == "graphics_processes":
                self._graphics[device.index] = bool(procs)
            for p in procs:
                gi = getattr(p, "gpuInstanceId", None)
                mem = getattr(p, "usedGpuMemory", None)
                found[int(p.pid)] = (None if mem is None else int(mem), None if gi in (None, 0xFFFFFFFF) else int(gi))
        util = self._process_util(device, found) if len(found) > 1 else {}
        return [ProcessInfo(pid, mem, util.get(pid), gi) for pid, (mem, gi) in sorted(found.items())]

    def _process_util(self, device: DeviceIdentity, found: dict) -> dict[int, int]:
        """Per-process SM utilisation (percent) of a shared GPU, averaged over NVML's samples since the
        last read. Read when the GPU's processes change, else at most every PROCESS_UTIL_REFRESH_S
        (pynvml spends two calls on it; the split weights it feeds change slowly)."""
        nv = self._nvml
        pids = frozenset(found)
        cached = self._util_cache.get(device.index)
        now = self.clock()
        if cached is not None and cached[0] == pids and now - cached[1] < PROCESS_UTIL_REFRESH_S:
            return cached[2]
        if "process_utilization" in self._unsupported[device.index]:
            return {}
        try:
            samples = nv.nvmlDeviceGetProcessUtilization(self._handles[device.index],
                                                         self._util_seen_us.get(device.index, 0))
        except nv.NVMLError as err:
            kind = outcome(err)
            if kind is Outcome.LOST:
                raise DeviceLost(f"GPU {device.index} ({device.uuid}): {err}") from err
            if kind is Outcome.UNSUPPORTED:
                self._unsupported[device.index].add("process_utilization")
            samples = []  # NO_DATA: no sample since the last call
        seen: dict[int, list[int]] = {}
        for s in samples:
            seen.setdefault(int(s.pid), []).append(int(s.smUtil))
            self._util_seen_us[device.index] = max(self._util_seen_us.get(device.index, 0), int(s.timeStamp))
        util = {pid: round(sum(v) / len(v)) for pid, v in seen.items()}
        self._util_cache[device.index] = (pids, now, util)
        return util


def _from_config(section: dict, ctx: SourceContext) -> list[DeviceSource]:
    return [NvmlSource(ctx.libraries.get("nvml"), read_processes=ctx.read_processes)] if section["enabled"] else []


register("source", "nvml", _from_config, "NVIDIA GPUs through NVML (the default on a GPU node)",
         schema={"enabled": (bool, True, None)})

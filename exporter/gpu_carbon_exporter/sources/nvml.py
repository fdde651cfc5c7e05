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

from ..plugins import SourceContext, register
from .base import (DeviceIdentity, DeviceLost, DeviceReading, DeviceSource,
                   MigInstance, ProcessInfo, SourceUnavailable)
from .nvml_direct import DirectCalls

log = logging.getLogger(__name__)

NO_LIBRARY_HINT = (
    "NVML is not available: {err}. Install the NVIDIA driver (it provides "
    "libnvidia-ml.so.1), or run with --simulate to use a simulated GPU fleet.")

# Per-process utilisation of a shared GPU is re-read at most this often (s) while its processes stay the same.
PROCESS_UTIL_REFRESH_S = 5.0
# Gauges that no accounting reads, only scrapes (query name, reading attributes). A sample reads every
# GPU's power, power fields (with the energy counter) and compute processes, and one query more: the
# per-process utilisation when it is due, else a slow value when one is due (the power limit, then the
# graphics processes, after each slow tick), else the next of these gauges in turn; the others keep
# their last values. So a GPU costs 4 NVML calls a sample, not 8, and at 1-s sampling each gauge is a
# few seconds old at most, well inside a scrape interval. A GPU's first read (and its first after it
# was lost) reads them all.
GAUGES = ("utilization", "memory", "temperature", "sm_clock")
_GAUGE_ATTRS = {"utilization": ("gpu_util_pct", "memory_util_pct"),
                "memory": ("memory_used_bytes", "memory_total_bytes"),
                "temperature": ("temperature_c",), "sm_clock": ("sm_clock_mhz",)}


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
        self._gauges: dict[int, dict[str, Any]] = {}  # index -> the gauges' last values, by reading attribute
        self._turn: dict[int, int] = {}  # index -> the gauge read next
        self._due: dict[int, list[str]] = {}  # index -> slow queries waiting for a spare query
        self._direct: dict[int, DirectCalls] = {}  # index -> its buffers, with the real library (not a fake)

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
        if hasattr(nv, "_nvmlGetFunctionPointer"):  # pynvml itself: the hot queries go through ctypes directly
            self._direct[index] = DirectCalls(nv, handle)
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
                self._gauges.pop(device.index, None)  # back, it is read in full
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
        r.power_mw = self._call(device, "power", nv.nvmlDeviceGetPowerUsage, reading=r)
        fields = self._call(device, "power_fields", self._field_values, device.index, reading=r)
        if fields is not None:
            r.power_instant_mw, r.power_average_mw, energy = (_field_value(f) for f in fields)
            if device.has_energy_counter:
                r.energy_mj = energy
            if r.power_instant_mw is None and r.power_average_mw is None and energy is None:
                self._unsupported[device.index].add("power_fields")
        if device.has_energy_counter and r.energy_mj is None:
            r.energy_mj = self._call(device, "energy", nv.nvmlDeviceGetTotalEnergyConsumption, reading=r)
        first = device.index not in self._gauges
        due = self._due.setdefault(device.index, [])
        if slow and not first:
            due[:] = ["power_limit", "graphics_processes"]
        spare = not first  # the one query a sample makes beyond power, power fields and processes
        if self.read_processes:
            r.processes, used = self._processes(device, r, slow and first, spare)
            spare = spare and not used
        if slow and first or spare and due[:1] == ["power_limit"]:
            r.power_limit_mw = self._call(device, "power_limit", nv.nvmlDeviceGetEnforcedPowerLimit, reading=r)
            if not first:
                due.pop(0)
                spare = False
        self._read_gauges(device, r, GAUGES if first else self._next_gauge(device) if spare else ())
        return r

    def _next_gauge(self, device: DeviceIdentity) -> tuple[str, ...]:
        """The next gauge in turn that the GPU supports (none when it supports none)."""
        skip, turn = self._unsupported[device.index], self._turn.get(device.index, 0)
        for k in range(len(GAUGES)):
            name = GAUGES[(turn + k) % len(GAUGES)]
            if name not in skip:
                self._turn[device.index] = turn + k + 1
                return (name,)
        return ()

    def _read_gauges(self, device: DeviceIdentity, r: DeviceReading, names: tuple[str, ...]) -> None:
        """Read ``names`` into the GPU's last gauge values, then give the reading all of them."""
        nv = self._nvml
        last = self._gauges.setdefault(device.index, {})
        for name in names:
            if name == "utilization":
                util = self._call(device, name, nv.nvmlDeviceGetUtilizationRates, reading=r)
                values = (None, None) if util is None else (int(util.gpu), int(util.memory))
            elif name == "memory":
                mem = self._call(device, name, nv.nvmlDeviceGetMemoryInfo, reading=r)
                values = (None, None) if mem is None else (int(mem.used), int(mem.total))
            elif name == "temperature":
                values = (self._call(device, name, nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU, reading=r),)
            else:
                values = (self._call(device, name, nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM, reading=r),)
            last.update(zip(_GAUGE_ATTRS[name], values))
        for attr, value in last.items():
            setattr(r, attr, value)

    def _processes(self, device: DeviceIdentity, r: DeviceReading, slow_first: bool,
                   spare: bool) -> tuple[list[ProcessInfo], bool]:
        """Compute processes each sample (graphics ones when due: rare on datacenter GPUs), with
        per-process SM utilisation only where several processes share the GPU (it only serves splitting).
        Also whether the sample's spare query went to them."""
        found: dict[int, tuple[int | None, int | None]] = {}
        due = self._due[device.index]
        queries = ["compute_processes"]
        graphics, used = slow_first or self._graphics.get(device.index, False), False
        if not graphics and spare and due[:1] == ["graphics_processes"]:
            due.pop(0)
            graphics = used = True
        if graphics:
            queries.append("graphics_processes")
        for what in queries:
            procs = self._call(device, what, self._list_processes, what, device.index, reading=r) or []
            if what == "graphics_processes":
                self._graphics[device.index] = bool(procs)
            for pid, mem, gi in procs:
                found[pid] = (mem, gi)
        util, read = self._process_util(device, found) if len(found) > 1 else ({}, False)
        procs = [ProcessInfo(pid, mem, util.get(pid), gi) for pid, (mem, gi) in sorted(found.items())]
        return procs, used or read

    def _field_values(self, handle: Any, index: int) -> Any:
        """Instant and average power and the energy counter, in one call."""
        direct = self._direct.get(index)
        if direct is not None:
            return direct.field_values([_FIELD_INSTANT, _FIELD_AVERAGE, _FIELD_ENERGY])
        return self._nvml.nvmlDeviceGetFieldValues(handle, [_FIELD_INSTANT, _FIELD_AVERAGE, _FIELD_ENERGY])

    def _list_processes(self, handle: Any, what: str, index: int) -> list[tuple[int, int | None, int | None]]:
        """(pid, used memory, GPU instance) of the running processes (``what``: compute or graphics)."""
        direct = self._direct.get(index)
        if direct is not None:
            procs = direct.processes(what)
        elif what == "compute_processes":
            procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        else:
            procs = self._nvml.nvmlDeviceGetGraphicsRunningProcesses(handle)
        return [(int(p.pid), _memory(getattr(p, "usedGpuMemory", None)), _instance(getattr(p, "gpuInstanceId", None)))
                for p in procs]

    def _process_util(self, device: DeviceIdentity, found: dict) -> tuple[dict[int, int], bool]:
        """Per-process SM utilisation (percent) of a shared GPU, averaged over NVML's samples since the
        last read, and whether it was read now. Read when the GPU's processes change, else at most every
        PROCESS_UTIL_REFRESH_S (the split weights it feeds change slowly)."""
        nv = self._nvml
        pids = frozenset(found)
        cached = self._util_cache.get(device.index)
        now = self.clock()
        if cached is not None and cached[0] == pids and now - cached[1] < PROCESS_UTIL_REFRESH_S:
            return cached[2], False
        if "process_utilization" in self._unsupported[device.index]:
            return {}, False
        try:
            samples = self._utilization_samples(device.index, self._util_seen_us.get(device.index, 0))
        except nv.NVMLError as err:
            kind = outcome(err)
            if kind is Outcome.LOST:
                self._gauges.pop(device.index, None)
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
        return util, True

    def _utilization_samples(self, index: int, since_us: int) -> list:
        direct = self._direct.get(index)
        if direct is not None:
            return direct.process_utilization(since_us)
        return self._nvml.nvmlDeviceGetProcessUtilization(self._handles[index], since_us)


def _memory(value: Any) -> int | None:
    """Used GPU memory of a process; None where the driver cannot tell (WDDM)."""
    return None if value is None or value == N.NVML_VALUE_NOT_AVAILABLE_ulonglong.value else int(value)


def _instance(gi: Any) -> int | None:
    return None if gi in (None, 0xFFFFFFFF) else int(gi)


def _from_config(section: dict, ctx: SourceContext) -> list[DeviceSource]:
    return [NvmlSource(read_processes=ctx.read_processes)] if section["enabled"] else []


register("source", "nvml", _from_config, "NVIDIA GPUs through NVML (the default on a GPU node)",
         schema={"enabled": (bool, True, None)})

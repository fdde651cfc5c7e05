"""The sampler's hot NVML queries, called through ctypes into buffers kept per GPU.

pynvml's wrappers allocate their structures on every call, read each value through a Python
``__getattribute__``, and make two calls for a list (the first for its size). At one sample a
second over dozens of GPUs that is most of the sampler's CPU time and half of its NVML calls.
These make one call into a buffer allocated once per GPU (grown and called again only when a
list outgrows it) and read plain ctypes structures that mirror NVML's own (``nvml.h``).
Errors are raised as the library's ``NVMLError``, exactly as the wrappers raise them.
"""
from __future__ import annotations

import ctypes
from typing import Any, Callable


class _Value(ctypes.Union):
    _fields_ = [("dVal", ctypes.c_double), ("uiVal", ctypes.c_uint), ("ulVal", ctypes.c_ulong),
                ("ullVal", ctypes.c_ulonglong), ("sllVal", ctypes.c_longlong), ("siVal", ctypes.c_int),
                ("usVal", ctypes.c_ushort)]


class FieldValue(ctypes.Structure):
    """nvmlFieldValue_t."""

    _fields_ = [("fieldId", ctypes.c_uint32), ("scopeId", ctypes.c_uint32), ("timestamp", ctypes.c_int64),
                ("latencyUsec", ctypes.c_int64), ("valueType", ctypes.c_uint), ("nvmlReturn", ctypes.c_uint),
                ("value", _Value)]


class ProcessInfo(ctypes.Structure):
    """nvmlProcessInfo_t (v2, the layout of the _v3 list functions)."""

    _fields_ = [("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong), ("gpuInstanceId", ctypes.c_uint),
                ("computeInstanceId", ctypes.c_uint)]


class UtilizationSample(ctypes.Structure):
    """nvmlProcessUtilizationSample_t."""

    _fields_ = [("pid", ctypes.c_uint), ("timeStamp", ctypes.c_ulonglong), ("smUtil", ctypes.c_uint),
                ("memUtil", ctypes.c_uint), ("encUtil", ctypes.c_uint), ("decUtil", ctypes.c_uint)]


_LISTS = {"compute_processes": "nvmlDeviceGetComputeRunningProcesses_v3",
          "graphics_processes": "nvmlDeviceGetGraphicsRunningProcesses_v3"}


class DirectCalls:
    """One GPU's buffers; ``nvml`` is the pynvml module (its function pointers and error class)."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml, self.handle = nvml, handle
        self._buffers: dict[str, tuple[int, Any]] = {}
        self._fields: tuple[tuple[int, ...], Any] | None = None

    def _fn(self, name: str) -> Any:
        return self.nvml._nvmlGetFunctionPointer(name)  # cached by pynvml

    def field_values(self, field_ids: list[int]) -> Any:
        """The field values, in one call into an array kept for these ids (``nvmlFieldValue_t`` entries)."""
        ids = tuple(field_ids)
        if self._fields is None or self._fields[0] != ids:
            values = (FieldValue * len(ids))()
            for i, field_id in enumerate(ids):
                values[i].fieldId = field_id
            self._fields = (ids, values)
        values = self._fields[1]
        ret = self._fn("nvmlDeviceGetFieldValues")(self.handle, ctypes.c_int32(len(ids)), ctypes.byref(values))
        if ret != self.nvml.NVML_SUCCESS:
            raise self.nvml.NVMLError(ret)
        return values

    def processes(self, what: str) -> list[ProcessInfo]:
        """The compute or graphics processes (``what``), in one call while the buffer holds them all."""
        fn = self._fn(_LISTS[what])
        return self._into(what, ProcessInfo, lambda buf, count: fn(self.handle, count, buf))

    def process_utilization(self, since_us: int) -> list[UtilizationSample]:
        """Per-process utilisation samples since ``since_us``; NVMLError NOT_FOUND when there is none."""
        fn, since = self._fn("nvmlDeviceGetProcessUtilization"), ctypes.c_ulonglong(since_us)
        return self._into("process_utilization", UtilizationSample,
                          lambda buf, count: fn(self.handle, buf, count, since))

    def _into(self, what: str, struct: type, invoke: Callable[[Any, Any], int]) -> list:
        """Call into the buffer for ``what``; grown (twice the count and 5, as pynvml) and called again
        when too small."""
        nv = self.nvml
        size, buf = self._buffers.get(what, (0, None))
        for _ in range(3):
            count = ctypes.c_uint(size)
            ret = invoke(buf, ctypes.byref(count))
            if ret == nv.NVML_SUCCESS:
                return buf[:count.value] if size and count.value else []
            if ret != nv.NVML_ERROR_INSUFFICIENT_SIZE:
                raise nv.NVMLError(ret)
            size = count.value * 2 + 5
            buf = (struct * size)()
            self._buffers[what] = (size, buf)
        raise nv.NVMLError(nv.NVML_ERROR_INSUFFICIENT_SIZE)

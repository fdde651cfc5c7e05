"""Estimated CPU power where no sensor exists: psutil CPU utilisation x a configured TDP.

Always labelled ``method="estimated"`` and ``zone="estimated"``, never mixed with measured values.
"""
from __future__ import annotations

from typing import Callable

from ..plugins import SourceContext, register
from ..schema import between, positive
from .base import DeviceIdentity, DeviceReading, DeviceSource
from .rapl import CPU


class EstimatedCpuSource(DeviceSource):
    name = "cpu_estimate"

    def __init__(self, tdp_watts: float, idle_fraction: float = 0.0,
                 utilisation: Callable[[], float] | None = None) -> None:
        if utilisation is None:
            import psutil

            utilisation = lambda: psutil.cpu_percent(interval=None)  # noqa: E731
        self.tdp_w, self.idle_fraction, self.utilisation = tdp_watts, idle_fraction, utilisation

    def open(self) -> list[DeviceIdentity]:
        self.utilisation()  # psutil's first call primes its counters
        return [DeviceIdentity(index=0, uuid="cpu:estimated", name="CPU (estimated)", kind=CPU.name,
                               has_energy_counter=False, fast_integration=False, method_without_counter="estimated",
                               labels=(("zone", "estimated"), ("domain", "package")))]

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        u = min(max(self.utilisation() / 100.0, 0.0), 1.0)
        return int(self.tdp_w * (self.idle_fraction + (1 - self.idle_fraction) * u) * 1000)

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        return DeviceReading(power_mw=self.read_power_mw(device))


def _from_config(section: dict, ctx: SourceContext) -> list[DeviceSource]:
    if not section["tdp_watts"]:
        return []
    return [EstimatedCpuSource(section["tdp_watts"], section["idle_fraction"])]


register("source", "cpu_estimate", _from_config, "estimated CPU power (utilisation x TDP) where nothing is measured",
         schema={"tdp_watts": (float, None, positive(10000)), "idle_fraction": (float, 0.0, between(0, 0.99))})

"""Per-job accounting: holders per GPU each sample, energy split at every accounting step.

Conservation holds at every step, for energy and emissions, in both views:
Σ jobs (allocated) + unallocated = Σ jobs (active) + idle + unattributed = the GPU's energy.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from ..sources.base import DeviceIdentity, DeviceReading
from .mappers import Mapper, ProcessInfo
from .model import Holder, Job
from .split import split

log = logging.getLogger(__name__)


@dataclass
class JobCounters:
    job: Job
    energy_allocated_j: float = 0.0
    energy_active_j: float = 0.0
    emissions_allocated_g: float = 0.0
    emissions_active_g: float = 0.0
    embodied_g: float = 0.0  # allocated view: embodied carbon of the GPU time held
    gpus: set[str] = field(default_factory=set)  # GPU indices (and MIG "gpu.gi")
    first_seen: float = 0.0
    last_seen: float = 0.0


@dataclass
class GpuBuckets:
    unallocated_j: float = 0.0
    unallocated_g: float = 0.0
    idle_j: float = 0.0
    idle_g: float = 0.0
    unattributed_j: float = 0.0
    unattributed_g: float = 0.0
    unallocated_embodied_g: float = 0.0
    method: str = "none"


@dataclass(frozen=True)
class AttributionSnapshot:
    jobs: tuple[JobCounters, ...]
    gpus: dict[str, GpuBuckets]  # uuid -> buckets


class Attribution:
    def __init__(self, mappers: list[Mapper], *, idle_watts: dict[str, float] | None = None,
                 linger_s: float = 300.0, embodied_g_per_s: float = 0.0) -> None:
        self.mappers, self.idle_watts, self.linger_s = mappers, idle_watts or {}, linger_s
        self.embodied_g_per_s = embodied_g_per_s
        self.jobs: dict[str, JobCounters] = {}
        self.gpus: dict[str, GpuBuckets] = {}
        self._holders: dict[str, list[tuple[float, str, list[Holder]]]] = {}  # uuid -> [(weight, slot, holders)]
        self._min_power_w: dict[str, float] = {}

    # -- per sample --------------------------------------------------------------
    def begin_sample(self) -> None:
        for m in self.mappers:
            try:
                m.refresh()
            except Exception as err:  # noqa: BLE001 - degrade this mapper only
                log.error("mapper %s refresh failed: %r", m.name, err)

    def _ask(self, device: DeviceIdentity, mig, procs: list[ProcessInfo]) -> list[Holder]:
        for m in self.mappers:
            try:
                found = m.holders(device, mig, procs)
            except Exception as err:  # noqa: BLE001 - one broken mapper must not stop the others
                log.error("mapper %s failed on %s: %r", m.name, device.uuid, err)
                continue
            if found is not None:
                return found
        return []

    def assign(self, device: DeviceIdentity, reading: DeviceReading, now: float) -> None:
        """Who holds ``device`` from now on (until the next sample)."""
        if reading.power_mw is not None:
            w = reading.power_mw / 1000.0
            self._min_power_w[device.uuid] = min(self._min_power_w.get(device.uuid, w), w)
        procs = list(reading.processes or [])
        if device.mig_enabled and device.mig_instances:
            sms = [m.sm_count or 1 for m in device.mig_instances]
            slots = []
            for mig, sm in zip(device.mig_instances, sms):
                mine = [p for p in procs if p.gpu_instance_id in (None, mig.gpu_instance_id)]
                slots.append((sm / sum(sms), f"{device.index}.{mig.gpu_instance_id}", self._ask(device, mig, mine)))
        else:
            slots = [(1.0, str(device.index), self._ask(device, None, procs))]
        self._holders[device.uuid] = slots
        for _, slot, holders in slots:
            for h in holders:
                jc = self.jobs.get(h.job.key)
                if jc is None:
                    jc = self.jobs[h.job.key] = JobCounters(h.job, first_seen=now)
                jc.job = h.job
                jc.gpus.add(slot)
                jc.last_seen = now

    def idle_w(self, device: DeviceIdentity) -> float:
        """Idle power: configured per GPU model, else the lowest power seen since start."""
        return self.idle_watts.get(device.name, self._min_power_w.get(device.uuid, 0.0))

    # -- per accounting step -------------------------------------------------------
    def account(self, device: DeviceIdentity, joules: float, grams: float, t0: float, t1: float) -> None:
        b = self.gpus.setdefault(device.uuid, GpuBuckets())
        idle_total = self.idle_w(device) * max(t1 - t0, 0.0)
        g_per_j = grams / joules if joules > 0 else 0.0
        slots = self._holders.get(device.uuid) or [(1.0, str(device.index), [])]
        # Parts of one GPU: MIG instances by SM share, the last taking the remainder.
        energy_parts = [joules * w for w, _, _ in slots[:-1]]
        energy_parts.append(joules - sum(energy_parts))
        for (w, _, holders), e in zip(slots, energy_parts):
            embodied = self.embodied_g_per_s * max(t1 - t0, 0.0) * w
            if holders:
                for h in holders:  # GPU time held: shared equally, like idle
                    self.jobs[h.job.key].embodied_g += embodied / len(holders)
            else:
                b.unallocated_embodied_g += embodied
            s = split(e, idle_total * w, holders)
            b.method = s.method if len(slots) == 1 else "mig"
            b.unallocated_j += s.unallocated
            b.unallocated_g += s.unallocated * g_per_j
            b.idle_j += s.idle
            b.idle_g += s.idle * g_per_j
            b.unattributed_j += s.unattributed
            b.unattributed_g += s.unattributed * g_per_j
            for key, part in s.allocated.items():
                jc = self.jobs[key]
                jc.energy_allocated_j += part
                jc.emissions_allocated_g += part * g_per_j
            for key, part in s.active.items():
                jc = self.jobs[key]
                jc.energy_active_j += part
                jc.emissions_active_g += part * g_per_j

    def expire(self, now: float) -> None:
        """Drop jobs not seen for longer than the linger time (Prometheus has seen their final value)."""
        for key in [k for k, j in self.jobs.items() if now - j.last_seen > self.linger_s]:
            del self.jobs[key]

    def snapshot(self) -> AttributionSnapshot:
        return AttributionSnapshot(
            tuple(replace(j, gpus=set(j.gpus)) for j in self.jobs.values()),
            {u: replace(b) for u, b in self.gpus.items()})

    # -- persistence ----------------------------------------------------------------
    def state(self) -> dict:
        return {
            "jobs": {k: {"job": vars(j.job), "energy_allocated_j": j.energy_allocated_j,
                         "energy_active_j": j.energy_active_j, "emissions_allocated_g": j.emissions_allocated_g,
                         "emissions_active_g": j.emissions_active_g, "embodied_g": j.embodied_g,
                         "gpus": sorted(j.gpus),
                         "first_seen": j.first_seen, "last_seen": j.last_seen} for k, j in self.jobs.items()},
            "gpus": {u: vars(b) for u, b in self.gpus.items()},
        }

    def restore(self, data: dict) -> None:
        try:
            for key, j in data.get("jobs", {}).items():
                self.jobs[key] = JobCounters(Job(**j["job"]), j["energy_allocated_j"], j["energy_active_j"],
                                             j["emissions_allocated_g"], j["emissions_active_g"],
                                             j.get("embodied_g", 0.0), set(j["gpus"]), j["first_seen"], j["last_seen"])
            for uuid, b in data.get("gpus", {}).items():
                self.gpus[uuid] = GpuBuckets(**b)
        except (KeyError, TypeError) as err:
            log.warning("ignoring malformed saved job counters: %s", err)

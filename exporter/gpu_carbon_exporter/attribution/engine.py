"""Per-job accounting: holders per GPU each sample, energy split at every accounting step.

Conservation holds at every step, for energy and emissions, in both views:
Σ jobs (allocated) + unallocated = Σ jobs (active) + idle + unattributed = the GPU's energy.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from ..sources.base import MILLI, DeviceIdentity, DeviceReading, ProcessInfo
from ..statecheck import BadEntry, mapping, number, text
from .mappers import Mapper
from .model import Holder, Job
from .split import split
from .work import WorkReader

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
    gpu_seconds: float = 0.0  # GPU time held (s); shared GPUs split equally, MIG by SM share
    work: dict[str, float] = field(default_factory=dict)  # units of work the job declared: unit -> count
    # Wall clock (unix s) of the first and last accounting step in which the job held a GPU: the span its
    # energy covers, which the report takes as the job's own start and end (persisted, never moved back).
    held_from: float | None = None
    held_until: float | None = None


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
                 linger_seconds: float = 300.0, embodied_g_per_s: float = 0.0, work_dir: str | None = None,
                 work_poll_seconds: float = 5.0) -> None:
        self.mappers, self.idle_watts, self.linger_seconds = mappers, idle_watts or {}, linger_seconds
        self.work = WorkReader(work_dir) if work_dir else None
        self.work_poll_seconds = work_poll_seconds
        self._work_read_at = float("-inf")
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
            w = reading.power_mw * MILLI
            self._min_power_w[device.uuid] = min(self._min_power_w.get(device.uuid, w), w)
        procs = list(reading.processes or [])
        if device.mig_enabled and device.mig_instances:
            sms = [m.sm_count or 1 for m in device.mig_instances]
            slots = []
            for mig, sm in zip(device.mig_instances, sms):
                mine = [p for p in procs if p.gpu_instance_id in (None, mig.gpu_instance_id)]
                slots.append((sm / sum(sms), _mig_slot(device, mig), self._ask(device, mig, mine)))
        else:
            slots = [(1.0, str(device.index), self._ask(device, None, procs))]
        self._holders[device.uuid] = slots
        for _, slot, holders in slots:
            for h in holders:
                jc = self._counters(h.job, now)
                jc.job = h.job
                jc.gpus.add(slot)
                jc.last_seen = now

    def forget_holders(self, uuid: str) -> None:
        """A lost GPU: who holds it is unknown until it answers again (its energy meanwhile is unallocated)."""
        self._holders.pop(uuid, None)

    def _counters(self, job: Job, now: float) -> JobCounters:
        jc = self.jobs.get(job.key)
        if jc is None:
            jc = self.jobs[job.key] = JobCounters(job, first_seen=now, last_seen=now)
        return jc

    def idle_w(self, device: DeviceIdentity) -> float:
        """Idle power: configured per GPU model, else the lowest power seen since start."""
        return self.idle_watts.get(device.name, self._min_power_w.get(device.uuid, 0.0))

    # -- per accounting step -------------------------------------------------------
    def account(self, device: DeviceIdentity, joules: float, grams: float, t0: float, t1: float,
                held_s: float | None = None) -> None:
        """Split ``joules`` (and ``grams``) used over [t0, t1] among the GPU's holders; never negative.

        ``held_s``: seconds of GPU time the holders held for embodied carbon (the sampled,
        monotonic duration; 0 for energy recovered over the exporter's downtime, as for the GPU)."""
        b = self.gpus.setdefault(device.uuid, GpuBuckets())
        sampled = held_s is None or held_s > 0  # not energy recovered over the exporter's downtime
        for _, _, holders in self._holders.get(device.uuid, []):
            for h in holders:  # a job that expired while it still held the GPU comes back
                jc = self.jobs.setdefault(h.job.key, JobCounters(h.job))
                if sampled:  # its start and end: times it was seen holding the GPU, never a downtime's end
                    jc.held_from = t0 if jc.held_from is None else min(jc.held_from, t0)
                    jc.held_until = t1 if jc.held_until is None else max(jc.held_until, t1)
        idle_total = self.idle_w(device) * max(t1 - t0, 0.0)
        g_per_j = grams / joules if joules > 0 else 0.0
        slots = self._holders.get(device.uuid) or [(1.0, str(device.index), [])]
        # Parts of one GPU: MIG instances by SM share, the last taking the remainder.
        energy_parts = [joules * w for w, _, _ in slots[:-1]]
        energy_parts.append(max(joules - sum(energy_parts), 0.0))
        for (w, _, holders), e in zip(slots, energy_parts):
            held = max(t1 - t0 if held_s is None else held_s, 0.0) * w
            embodied = self.embodied_g_per_s * held
            if holders:
                for h in holders:  # GPU time held: shared equally, like idle
                    self.jobs[h.job.key].embodied_g += embodied / len(holders)
                    self.jobs[h.job.key].gpu_seconds += held / len(holders)
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

    def read_work(self, now: float) -> None:
        """Units of work the jobs declared (attribution.work_dir), every ``work_poll_seconds``; a count
        only ever rises."""
        if self.work is None or now - self._work_read_at < self.work_poll_seconds:
            return
        self._work_read_at = now
        for jc in self.jobs.values():
            found = self.work.read(jc.job.id)
            if found is not None:
                count, unit = found
                jc.work[unit] = max(jc.work.get(unit, 0.0), count)

    def expire(self, now: float) -> None:
        """Drop jobs not seen for longer than the linger time (Prometheus has seen their final value)."""
        gone = {k for k, j in self.jobs.items() if now - j.last_seen > self.linger_seconds}
        for key in gone:
            del self.jobs[key]
        if gone:
            for uuid, slots in self._holders.items():
                self._holders[uuid] = [(w, slot, [h for h in hs if h.job.key not in gone]) for w, slot, hs in slots]

    def snapshot(self) -> AttributionSnapshot:
        return AttributionSnapshot(
            tuple(replace(j, gpus=set(j.gpus), work=dict(j.work)) for j in self.jobs.values()),
            {u: replace(b) for u, b in self.gpus.items()})

    # -- persistence ----------------------------------------------------------------
    def state(self, mono: float, wall: float) -> dict:
        """Counters, remainders and current holders; times saved as wall clock."""
        to_wall = wall - mono
        return {
            "jobs": {k: {"job": vars(j.job), "energy_allocated_j": j.energy_allocated_j,
                         "energy_active_j": j.energy_active_j, "emissions_allocated_g": j.emissions_allocated_g,
                         "emissions_active_g": j.emissions_active_g, "embodied_g": j.embodied_g,
                         "gpu_seconds": j.gpu_seconds, "work": dict(j.work),
                         "gpus": sorted(j.gpus), "first_seen": j.first_seen + to_wall,
                         "held_from": j.held_from, "held_until": j.held_until,
                         "last_seen": j.last_seen + to_wall} for k, j in self.jobs.items()},
            "gpus": {u: vars(b) for u, b in self.gpus.items()},
            "holders": {u: [[w, slot, [_holder_state(h) for h in hs]] for w, slot, hs in slots]
                        for u, slots in self._holders.items()},
        }

    def restore(self, data: object, mono: float, wall: float) -> list[str]:
        """Restore saved counters and holders; returns the damaged entries it set aside."""
        problems: list[str] = []
        try:
            data = mapping(data, "attribution")
        except BadEntry as err:
            return [str(err)]
        for key, raw in _entries(data, "jobs", problems):
            try:
                self.jobs[key] = _job_from_state(mapping(raw, key), mono - wall, mono)
            except (BadEntry, TypeError) as err:
                problems.append(f"job {key}: {err}")
        for uuid, raw in _entries(data, "gpus", problems):
            try:
                self.gpus[uuid] = _buckets_from_state(mapping(raw, uuid))
            except (BadEntry, TypeError) as err:
                problems.append(f"GPU buckets {uuid}: {err}")
        for uuid, raw in _entries(data, "holders", problems):
            try:
                self._holders[uuid] = self._holders_from_state(raw)
            except (BadEntry, TypeError, ValueError, KeyError, AttributeError) as err:
                problems.append(f"holders of {uuid}: {err!r:.200}")
        return problems

    def _holders_from_state(self, raw: object) -> list[tuple[float, str, list[Holder]]]:
        if not isinstance(raw, list):
            raise BadEntry("not a list")
        slots = []
        for w, slot, hs in raw:
            weight = number({"w": w}, "w", hi=1.0)
            holders = [Holder(self.jobs[text(h, "job")].job, sm_util=number(h, "sm_util", optional=True),
                              memory_bytes=number(h, "memory_bytes", optional=True)) for h in hs]
            slots.append((weight, str(slot), holders))
        return slots


def _mig_slot(device: DeviceIdentity, mig) -> str:
    """``gpu.instance``; an instance whose id NVML did not give is named by its position instead."""
    gi = mig.gpu_instance_id if mig.gpu_instance_id is not None else f"i{mig.index}"
    return f"{device.index}.{gi}"


def _holder_state(h: Holder) -> dict:
    return {"job": h.job.key, "sm_util": h.sm_util, "memory_bytes": h.memory_bytes}


def _entries(data: dict, key: str, problems: list[str]) -> list[tuple[str, object]]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"{key}: not a mapping")
        return []
    return list(value.items())


def _job_from_state(j: dict, to_mono: float, mono_now: float) -> JobCounters:
    job = mapping(j.get("job"), "job")
    if not all(isinstance(v, str) for v in job.values()):
        raise BadEntry("job identity: not all strings")
    gpus = j.get("gpus", [])
    if not isinstance(gpus, list) or not all(isinstance(g, str) for g in gpus):
        raise BadEntry("gpus: not a list of strings")
    # Linger restarts at the restart: the mappers get their time to see the job again before it expires.
    work = j.get("work", {})
    if not isinstance(work, dict):
        raise BadEntry("work: not a mapping")
    return JobCounters(Job(**job), number(j, "energy_allocated_j"), number(j, "energy_active_j"),
                       number(j, "emissions_allocated_g"), number(j, "emissions_active_g"),
                       number(j, "embodied_g", default=0.0), set(gpus),
                       min(number(j, "first_seen", hi=4e9) + to_mono, mono_now), mono_now,
                       number(j, "gpu_seconds", default=0.0),
                       {str(u): number(work, u) for u in work},
                       number(j, "held_from", optional=True, hi=4e9), number(j, "held_until", optional=True, hi=4e9))


def _buckets_from_state(b: dict) -> GpuBuckets:
    values = {k: number(b, k, default=0.0) for k in GpuBuckets.__dataclass_fields__ if k != "method"}
    return GpuBuckets(**values, method=text(b, "method", "none"))

"""Who holds each GPU: holders per GPU each sample, the jobs' lifetimes, units of work, and their
saved state. The split of each accounting step among the holders is ``accounting.jobs``'s.
"""
from __future__ import annotations

import logging

from ..accounting.jobs import account_step
from ..snapshot import AttributionSnapshot, GpuBuckets, JobCounters, shallow_copy
from ..sources.base import MILLI, DeviceIdentity, DeviceReading, ProcessInfo
from ..statecheck import BadEntry, mapping, number, text
from .mappers import Mapper
from .model import Holder, Job
from .work import WorkReader

log = logging.getLogger(__name__)


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
                jc.gpus.add((device.vendor, slot))
                jc.gpus.discard(("", slot))  # restored from an older state without its vendor: now known
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
        """Split ``joules`` (and ``grams``) used over [t0, t1] among the GPU's holders (``accounting.jobs``).

        ``held_s``: seconds of GPU time the holders held for embodied carbon (the sampled,
        monotonic duration; 0 for energy recovered over the exporter's downtime, as for the GPU)."""
        account_step(self.jobs, self.gpus.setdefault(device.uuid, GpuBuckets()),
                     self._holders.get(device.uuid) or [(1.0, str(device.index), [])],
                     idle_w=self.idle_w(device), embodied_g_per_s=self.embodied_g_per_s,
                     joules=joules, grams=grams, t0=t0, t1=t1, held_s=held_s)

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
        return AttributionSnapshot(tuple(_copy_job(j) for j in self.jobs.values()),
                                   {u: shallow_copy(b) for u, b in self.gpus.items()})

    # -- persistence ----------------------------------------------------------------
    def state(self, mono: float, wall: float) -> dict:
        """Counters, remainders and current holders; times saved as wall clock."""
        to_wall = wall - mono
        return {
            "jobs": {k: {"job": vars(j.job), "energy_allocated_j": j.energy_allocated_j,
                         "energy_active_j": j.energy_active_j, "emissions_allocated_g": j.emissions_allocated_g,
                         "emissions_active_g": j.emissions_active_g, "embodied_g": j.embodied_g,
                         "gpu_seconds": j.gpu_seconds, "work": dict(j.work),
                         "gpus": [list(g) for g in sorted(j.gpus)], "first_seen": j.first_seen + to_wall,
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


def _copy_job(j: JobCounters) -> JobCounters:
    """A job's counters for a snapshot: its own set of GPUs and units of work."""
    c = shallow_copy(j)
    c.gpus, c.work = set(j.gpus), dict(j.work)
    return c


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
    if not isinstance(gpus, list):
        raise BadEntry("gpus: not a list")
    # Linger restarts at the restart: the mappers get their time to see the job again before it expires.
    work = j.get("work", {})
    if not isinstance(work, dict):
        raise BadEntry("work: not a mapping")
    return JobCounters(Job(**job), number(j, "energy_allocated_j"), number(j, "energy_active_j"),
                       number(j, "emissions_allocated_g"), number(j, "emissions_active_g"),
                       number(j, "embodied_g", default=0.0), {_gpu_from_state(g) for g in gpus},
                       min(number(j, "first_seen", hi=4e9) + to_mono, mono_now), mono_now,
                       number(j, "gpu_seconds", default=0.0),
                       {str(u): number(work, u) for u in work},
                       number(j, "held_from", optional=True, hi=4e9), number(j, "held_until", optional=True, hi=4e9))


def _gpu_from_state(g: object) -> tuple[str, str]:
    """A held GPU, ``[vendor, slot]``. A bare slot is from a state saved before held GPUs carried their
    vendor, when AMD and Intel GPUs were already attributed: its vendor is unknown (""; exposed without
    one, which the report and dashboards read as that index on any vendor) until the job is seen
    holding it again."""
    if isinstance(g, str):
        return "", g
    if isinstance(g, list) and len(g) == 2 and all(isinstance(x, str) for x in g):
        return g[0], g[1]
    raise BadEntry(f"gpus: {g!r:.60} is neither [vendor, slot] nor a slot")


def _buckets_from_state(b: dict) -> GpuBuckets:
    values = {k: number(b, k, default=0.0) for k in GpuBuckets.__dataclass_fields__ if k != "method"}
    return GpuBuckets(**values, method=text(b, "method", "none"))

"""Builds Prometheus metric families from a meter snapshot, fresh on each scrape.

Every family is named by a constant of names.py (tests/test_names.py holds this module to it, so
``grep gpu_carbon_collector_success`` finds its one definition); this module
converts native units (mW, mJ, MHz, percent) to base units (W, J, Hz, ratio). It renders one
typed snapshot (``snapshot.Snapshot``) and computes nothing else: every counter and derived
figure (the node's rest power, the jobs' water) is the accounting's. docs/metrics.md lists
every family.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .names import (
    BUILD_INFO, COLLECTOR_DURATION_SECONDS, COLLECTOR_LAST_RUN_AGE_SECONDS, COLLECTOR_SUCCESS, GPU_ATTRIBUTION_INFO,
    GPU_EMBODIED_EMISSIONS_GRAMS_TOTAL, GPU_EMISSIONS_GRAMS_TOTAL, GPU_EMISSION_RATE_GRAMS_PER_SECOND,
    GPU_ENERGY_JOULES_TOTAL, GPU_IDLE_EMISSIONS_GRAMS_TOTAL, GPU_IDLE_ENERGY_JOULES_TOTAL, GPU_INFO,
    GPU_MEMORY_TOTAL_BYTES, GPU_MEMORY_USED_BYTES, GPU_MEMORY_UTILIZATION_RATIO, GPU_POWER_AVERAGE_WATTS,
    GPU_POWER_INSTANT_WATTS, GPU_POWER_LIMIT_WATTS, GPU_POWER_WATTS, GPU_SM_CLOCK_HERTZ, GPU_TEMPERATURE_CELSIUS,
    GPU_UNALLOCATED_EMISSIONS_GRAMS_TOTAL, GPU_UNALLOCATED_ENERGY_JOULES_TOTAL,
    GPU_UNATTRIBUTED_EMISSIONS_GRAMS_TOTAL, GPU_UNATTRIBUTED_ENERGY_JOULES_TOTAL, GPU_UP, GPU_UTILIZATION_RATIO,
    GPU_WATER_LITERS_TOTAL, GRID_INTENSITY_AGE_SECONDS, GRID_INTENSITY_FALLBACK,
    GRID_INTENSITY_FORECAST_MEAN_GRAMS_PER_KWH, GRID_INTENSITY_FORECAST_MIN_GRAMS_PER_KWH,
    GRID_INTENSITY_GRAMS_PER_KWH, GRID_INTENSITY_LOWEST_WINDOW_START_SECONDS, GRID_INTENSITY_SOURCE_INFO,
    INTENSITY_PROVIDER_ERRORS_TOTAL, INTENSITY_PROVIDER_REQUESTS_TOTAL, INTENSITY_PROVIDER_SUCCESSES_TOTAL,
    INTENSITY_PROVIDER_UP, JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL, JOB_EMISSIONS_GRAMS_TOTAL, JOB_END_TIME_SECONDS,
    JOB_ENERGY_JOULES_TOTAL, JOB_GPU_INFO, JOB_GPU_SECONDS_TOTAL, JOB_INFO, JOB_START_TIME_SECONDS,
    JOB_WATER_LITERS_TOTAL, JOB_WORK_UNITS_TOTAL, MIG_INSTANCE_INFO, NODE_REST_POWER_WATTS, PUE_RATIO,
    SCRAPE_ERRORS_TOTAL, SOURCE_INFO, STATE_DISCARDED_ENTRIES, STATE_WRITE_FAILURES_TOTAL, kind_families, rest_family,
)
from .kinds import whole_node
from .snapshot import DeviceSnapshot, NodeRestPower, Snapshot
from .sources.base import MEGA, MILLI, PERCENT, kind_doc

log = logging.getLogger(__name__)
# Every GPU family carries the vendor ("nvidia", "amd", "intel"; sources.base.DeviceIdentity.vendor):
# a joule is a joule, so the rules sum across vendors, and the dashboards split by it.
GPU_LABELS = ["gpu", "uuid", "vendor"]

# (family, help, reading attribute, scale to base unit)
_READING_GAUGES = [
    (GPU_POWER_WATTS, "Board power draw as nvmlDeviceGetPowerUsage reports it (W).", "power_mw", MILLI),
    (GPU_POWER_INSTANT_WATTS, "Instantaneous board power, NVML field POWER_INSTANT (W).", "power_instant_mw", MILLI),
    (GPU_POWER_AVERAGE_WATTS, "1-second average board power, NVML field POWER_AVERAGE (W).",
     "power_average_mw", MILLI),
    (GPU_UTILIZATION_RATIO, "Fraction of the last sample period a kernel was running (0-1).",
     "gpu_util_pct", PERCENT),
    (GPU_MEMORY_UTILIZATION_RATIO, "Fraction of the last sample period device memory was read or written (0-1).",
     "memory_util_pct", PERCENT),
    (GPU_MEMORY_USED_BYTES, "Device memory in use (bytes).", "memory_used_bytes", 1),
    (GPU_MEMORY_TOTAL_BYTES, "Device memory installed (bytes).", "memory_total_bytes", 1),
    (GPU_TEMPERATURE_CELSIUS, "GPU die temperature (degrees Celsius).", "temperature_c", 1),
    (GPU_SM_CLOCK_HERTZ, "Current SM clock (Hz).", "sm_clock_mhz", MEGA),
    (GPU_POWER_LIMIT_WATTS, "Enforced power limit (W).", "power_limit_mw", MILLI),
]


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    """``name`` ends in ``_total``, as exposed; prometheus_client strips it from the family and adds it back."""
    return CounterMetricFamily(name, doc, labels=labels)


class SnapshotCollector(Collector):
    """A ``Collector`` whose ``collect()`` reads ``get_snapshot()`` and nothing else."""

    def __init__(self, get_snapshot: Callable[[], Snapshot], *, embodied: bool = False,
                 water: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.get_snapshot, self.embodied, self.water, self.clock = get_snapshot, embodied, water, clock
        self._errors: dict[str, int] = {}
        self._section_names: set[str] = {"health"}  # of the last bulk render: the labels of scrape_errors
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        snap = self.get_snapshot()
        yield from self.collect_cached(snap)
        yield from self.collect_live(snap)

    def collect_cached(self, snap: Snapshot) -> Iterator[Metric]:
        """Every family that depends on the snapshot only (rendered once per snapshot by the server)."""
        build = _gauge(BUILD_INFO, "Exporter build; the value is always 1.", ["version"])
        build.add_metric([__version__], 1)
        yield build
        sections = self._sections(snap)
        self._section_names = {name for name, _ in sections} | {"health"}
        for name, build_section in sections:
            yield from self._isolated(name, build_section)
        # the collectors' last runs, the start of the health families (their ages follow, per scrape)
        yield from self._isolated("health", lambda: self._last_runs(snap))

    def collect_live(self, snap: Snapshot) -> Iterator[Metric]:
        """Families computed at scrape time: collector ages, the saved state's health, scrape errors."""
        yield from self._isolated("health", lambda: self._health(snap))
        errors = _counter(SCRAPE_ERRORS_TOTAL, "Metric families that failed to build and were left out of a "
                          "scrape, by section (the rest of the scrape is served).", ["section"])
        with self._lock:
            counts = dict(self._errors)
        for name in sorted(self._section_names | set(counts)):
            errors.add_metric([name], counts.get(name, 0))
        yield errors

    def _sections(self, snap: Snapshot) -> list[tuple[str, Callable[[], Iterator[Metric]]]]:
        sections: list[tuple[str, Callable[[], Iterator[Metric]]]] = [
            ("sources", lambda: self._sources(snap)),
            ("gpu", lambda: self._devices(tuple(d for d in snap.devices if d.identity.kind == "gpu")))]
        for kind in sorted({d.identity.kind for d in snap.devices} - {"gpu"}):
            sections.append((kind, lambda kind=kind: self._other(kind, [d for d in snap.devices
                                                                        if d.identity.kind == kind])))
        sections.append(("node_rest", lambda: self._rest_of_node(snap.node_rest_power)))
        if snap.attribution is not None:
            sections.append(("jobs", lambda: self._jobs(snap)))
            sections.append(("gpu_remainders", lambda: self._remainders(snap)))
        sections.append(("carbon", lambda: self._carbon(snap)))
        return sections

    def _isolated(self, name: str, build_section: Callable[[], Iterator[Metric]]) -> list[Metric]:
        """A section's families, or none of them if one fails: a bad value never fails the whole scrape."""
        try:
            return list(build_section())
        except Exception:  # logged and counted; the other sections are served
            with self._lock:
                self._errors[name] = self._errors.get(name, 0) + 1
            log.exception("building the %s metrics failed; serving the rest of the scrape", name)
            return []

    def _sources(self, snap: Snapshot) -> Iterator[Metric]:
        info = _gauge(SOURCE_INFO, "Driver and library versions of each source; always 1.",
                      ["collector", "driver_version", "library_version"])
        for name, kv in sorted(snap.source_info.items()):
            if not any(kv.values()):
                continue
            info.add_metric([name, kv.get("driver_version", ""), kv.get("nvml_version", "")], 1)
        yield info

    def _devices(self, devices: tuple[DeviceSnapshot, ...]) -> Iterator[Metric]:
        info = _gauge(GPU_INFO, "Identity of each GPU; always 1.",
                      GPU_LABELS + ["name", "pci_bus_id", "mig_mode"])
        mig = _gauge(MIG_INSTANCE_INFO, "MIG instances of each GPU; always 1.",
                     GPU_LABELS + ["mig_uuid", "gpu_instance_id", "compute_instance_id"])
        up = _gauge(GPU_UP, "1 if the GPU answered its last sample, 0 if it is lost.", GPU_LABELS)
        gauges = {attr: (_gauge(n, h, GPU_LABELS), scale) for n, h, attr, scale in _READING_GAUGES}
        energy = _counter(GPU_ENERGY_JOULES_TOTAL, "Energy used by the GPU (J), from the hardware counter "
                          "(method=counter) or integrated power (method=integrated).", GPU_LABELS + ["method"])
        emissions = _counter(GPU_EMISSIONS_GRAMS_TOTAL, "Operational emissions (gCO2e): energy x PUE x grid "
                             "intensity in force when it was used.", GPU_LABELS)
        rate = _gauge(GPU_EMISSION_RATE_GRAMS_PER_SECOND,
                      "Current operational emission rate (gCO2e/s): power x PUE x intensity.", GPU_LABELS)
        embodied = _counter(GPU_EMBODIED_EMISSIONS_GRAMS_TOTAL,
                            "Embodied emissions amortised over the device lifetime while powered (gCO2e).", GPU_LABELS)
        water = _counter(GPU_WATER_LITERS_TOTAL, "Water used for the GPU's energy at the configured WUE (L).",
                         GPU_LABELS)
        for d in devices:
            labels = _gpu_labels(d)
            info.add_metric(labels + [d.identity.name, d.identity.pci_bus_id,
                                      "enabled" if d.identity.mig_enabled else "disabled"], 1)
            for m in d.identity.mig_instances:
                mig.add_metric(labels + [m.uuid, _opt(m.gpu_instance_id), _opt(m.compute_instance_id)], 1)
            up.add_metric(labels, 1 if d.up else 0)
            if d.up and d.reading is not None:
                for attr, (fam, scale) in gauges.items():
                    value = getattr(d.reading, attr)
                    if value is not None:
                        fam.add_metric(labels, value * scale)
            if d.up and d.emission_rate_g_per_s is not None:
                rate.add_metric(labels, d.emission_rate_g_per_s)
            energy.add_metric(labels + [d.method], d.counters.energy_j)
            emissions.add_metric(labels, d.counters.emissions_g)
            embodied.add_metric(labels, d.counters.embodied_g)
            water.add_metric(labels, d.counters.water_l)
        yield from (info, mig, up, *(fam for fam, _ in gauges.values()), energy, emissions, rate)
        if self.embodied:
            yield embodied
        if self.water:
            yield water

    def _other(self, kind: str, devices: list[DeviceSnapshot]) -> Iterator[Metric]:
        """Boards and rails (Jetson), CPU zones (RAPL, estimates), whole nodes (Redfish, IPMI)."""
        names = [k for k, _ in devices[0].identity.labels]
        what, fam = kind_doc(kind), kind_families(kind)  # full names (CounterMetricFamily drops "_total")
        up = GaugeMetricFamily(fam.up, f"1 if the {what} answered its last sample.", labels=names)
        power = GaugeMetricFamily(fam.power, f"Power of the {what} (W).", labels=names + ["method"])
        energy = CounterMetricFamily(fam.energy, f"Energy of the {what} (J): method=counter (hardware counter), "
                                     "integrated (trapezoid of power) or estimated.", labels=names + ["method"])
        emissions = CounterMetricFamily(fam.emissions, _EMISSIONS_DOC.get(kind, f"Operational emissions of the "
                                        f"{what} (gCO2e); absent for parts of another measured device."), labels=names)
        rest = CounterMetricFamily(rest_family(kind), "Energy of the node not measured by its GPUs and CPUs (J): "
                                   "node energy minus theirs, never below 0; the node's emissions are this part's.",
                                   labels=names)
        util = GaugeMetricFamily(fam.utilization, f"GPU load of the {what} (0-1).", labels=names)
        for d in devices:
            labels = [v for _, v in d.identity.labels]
            up.add_metric(labels, 1 if d.up else 0)
            if d.up and d.reading is not None and d.reading.power_mw is not None:
                power.add_metric(labels + [d.method], d.reading.power_mw * MILLI)
            if d.up and d.reading is not None and d.reading.gpu_util_pct is not None:
                util.add_metric(labels, d.reading.gpu_util_pct * PERCENT)
            energy.add_metric(labels + [d.method], d.counters.energy_j)
            if d.identity.accounted:
                emissions.add_metric(labels, d.counters.emissions_g)
                rest.add_metric(labels, d.counters.rest_energy_j)
        yield from (up, power, energy)
        if emissions.samples:  # none where every device of the kind is a part of another (rails, covered disks)
            yield emissions
        if whole_node(kind):
            yield rest
        if util.samples:
            yield util

    def _jobs(self, snap: Snapshot) -> Iterator[Metric]:
        """Per-job counters in two views, and per-GPU remainders, so that the parts add up."""
        att = snap.attribution
        keys = ["job_id", "scheduler"]
        info = _gauge(JOB_INFO, "Job identity: user (only if enabled), team, account, namespace and pod; "
                      "always 1.", keys + ["user", "team", "account", "namespace", "pod"])
        gpus = _gauge(JOB_GPU_INFO, "A GPU (index, or gpu.instance for MIG, and vendor: each vendor's GPUs are "
                      "numbered from 0) the job holds or held; always 1.", keys + ["gpu", "vendor"])
        energy = _counter(JOB_ENERGY_JOULES_TOTAL, "GPU energy attributed to the job (J). view=allocated: share of "
                          "active energy plus an equal share of idle; view=active: active energy only.",
                          keys + ["view"])
        emissions = _counter(JOB_EMISSIONS_GRAMS_TOTAL, "Operational emissions attributed to the job (gCO2e), "
                             "same views as the energy.", keys + ["view"])
        held = _counter(JOB_GPU_SECONDS_TOTAL, "GPU time the job held (s): a shared GPU split equally among its "
                        "holders, a MIG instance counted by its share of the GPU.", keys)
        work = _counter(JOB_WORK_UNITS_TOTAL, "Units of work the job declared on this node (attribution.work_dir), "
                        "by unit: tokens, images, samples, steps.", keys + ["unit"])
        start = _gauge(JOB_START_TIME_SECONDS, "Start of the first sampling interval in which the job held a GPU "
                       "on this node (unix time).", keys)
        end = _gauge(JOB_END_TIME_SECONDS, "End of the last sampling interval in which the job held a GPU on "
                     "this node (unix time); while it runs, the latest sample.", keys)
        for jc in sorted(att.jobs, key=lambda j: j.job.key):
            j = jc.job
            info.add_metric([j.id, j.scheduler, j.user, j.team, j.account, j.namespace, j.pod], 1)
            for vendor, gpu in sorted(jc.gpus, key=lambda g: (g[0], _slot_order(g[1]))):
                gpus.add_metric([j.id, j.scheduler, gpu, vendor], 1)
            for view, e, g in (("allocated", jc.energy_allocated_j, jc.emissions_allocated_g),
                               ("active", jc.energy_active_j, jc.emissions_active_g)):
                energy.add_metric([j.id, j.scheduler, view], e)
                emissions.add_metric([j.id, j.scheduler, view], g)
            held.add_metric([j.id, j.scheduler], jc.gpu_seconds)
            for unit, count in sorted(jc.work.items()):
                work.add_metric([j.id, j.scheduler, unit], count)
            if jc.held_from is not None and jc.held_until is not None:  # none before its first energy
                start.add_metric([j.id, j.scheduler], jc.held_from)
                end.add_metric([j.id, j.scheduler], jc.held_until)
        yield from (info, gpus, energy, emissions, held, work, start, end)
        if self.embodied:
            emb = _counter(JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL, "Embodied carbon of the GPU time the job held "
                           "(gCO2e), shared equally among the holders.", keys)
            for jc in sorted(att.jobs, key=lambda j: j.job.key):
                emb.add_metric([jc.job.id, jc.job.scheduler], jc.embodied_g)
            yield emb
        if self.water and snap.wue_liters_per_kwh is not None:
            water = _counter(JOB_WATER_LITERS_TOTAL, "Water for the job's allocated energy at the configured WUE (L).",
                             keys)
            for jc in sorted(att.jobs, key=lambda j: j.job.key):
                water.add_metric([jc.job.id, jc.job.scheduler], jc.water_l)
            yield water

    def _remainders(self, snap: Snapshot) -> Iterator[Metric]:
        """Per-GPU energy no job paid for, so that jobs plus remainders add up to the GPU."""
        att = snap.attribution
        by_uuid = {d.identity.uuid: d for d in snap.devices}
        fams = {}
        for name, doc, joules, grams in (
                ("unallocated", "allocated view: energy of the GPU while no job held it",
                 GPU_UNALLOCATED_ENERGY_JOULES_TOTAL, GPU_UNALLOCATED_EMISSIONS_GRAMS_TOTAL),
                ("idle", "active view: idle energy of the GPU (idle power x time)",
                 GPU_IDLE_ENERGY_JOULES_TOTAL, GPU_IDLE_EMISSIONS_GRAMS_TOTAL),
                ("unattributed", "active view: active energy with no job (unmapped processes)",
                 GPU_UNATTRIBUTED_ENERGY_JOULES_TOTAL, GPU_UNATTRIBUTED_EMISSIONS_GRAMS_TOTAL)):
            fams[name] = (CounterMetricFamily(joules, f"{doc.capitalize()} (J).", labels=GPU_LABELS),
                          CounterMetricFamily(grams, f"{doc.capitalize()} (gCO2e).", labels=GPU_LABELS))
        split = _gauge(GPU_ATTRIBUTION_INFO, "How the GPU's energy was last split: exclusive, sm, memory, equal, "
                       "mig or none; always 1.", GPU_LABELS + ["split"])
        for uuid, b in sorted(att.gpus.items()):
            d = by_uuid.get(uuid)
            if d is None:
                continue
            labels = _gpu_labels(d)
            for name, (fe, fg) in fams.items():
                fe.add_metric(labels, getattr(b, f"{name}_j"))
                fg.add_metric(labels, getattr(b, f"{name}_g"))
            split.add_metric(labels + [b.method], 1)
        for fe, fg in fams.values():
            yield from (fe, fg)
        yield split

    @staticmethod
    def _rest_of_node(rest: NodeRestPower | None) -> Iterator[Metric]:
        """Node power not drawn by GPUs or CPU, where the accounting could tell it."""
        if rest is None:
            return
        fam = _gauge(NODE_REST_POWER_WATTS, "Node power not drawn by GPUs or CPU (W): node power "
                     "(BMC) minus GPU board power minus measured CPU power, never below 0.", ["source"])
        fam.add_metric([rest.source], rest.watts)
        yield fam

    def _carbon(self, snap: Snapshot) -> Iterator[Metric]:
        intensity = _gauge(GRID_INTENSITY_GRAMS_PER_KWH, "Grid carbon intensity in force (gCO2e/kWh).", ["zone"])
        fallback = _gauge(GRID_INTENSITY_FALLBACK, "1 while the latest poll of the live provider failed (a "
                          "last good value or the fallback is served), else 0.", ["zone"])
        source = _gauge(GRID_INTENSITY_SOURCE_INFO, "Where the intensity in force comes from and its signal "
                        "(average or marginal); always 1. The one intensity series that changes on fallback.",
                        ["zone", "source", "signal"])
        if snap.intensity is not None:
            i = snap.intensity
            intensity.add_metric([i.zone], i.g_per_kwh)
            fallback.add_metric([i.zone], 1 if i.fallback else 0)
            source.add_metric([i.zone, i.source, i.signal], 1)
        yield from (intensity, fallback, source)
        if snap.intensity is not None:
            age = _gauge(GRID_INTENSITY_AGE_SECONDS, "Seconds since the intensity value was fetched "
                         "(0 for static sources; absent before a live provider's first good fetch).", ["zone"])
            stats = snap.provider_stats
            if stats is None:
                age.add_metric([snap.intensity.zone], 0.0)
            elif stats.age_s is not None:
                age.add_metric([snap.intensity.zone], stats.age_s)
            yield age
            if snap.provider_up is not None:
                # The provider's own health, apart from the device collectors: a failing API or file
                # leaves the last good value or the fallback serving: emissions degraded, not stopped.
                up = _gauge(INTENSITY_PROVIDER_UP, "1 if the intensity provider's latest poll or read succeeded; "
                            "0 while it fails (the last good value, then the fallback, is served).",
                            ["provider", "zone"])
                up.add_metric([snap.provider_up[0], snap.intensity.zone], 1 if snap.provider_up[1] else 0)
                yield up
            yield from self._provider(snap)
        pue = _gauge(PUE_RATIO, "Power usage effectiveness applied to operational emissions.")
        pue.add_metric([], snap.pue)
        yield pue

    def _provider(self, snap: Snapshot) -> Iterator[Metric]:
        zone, stats, fc = snap.intensity.zone, snap.provider_stats, snap.forecast
        if stats is not None:
            labels = ["provider", "zone"]
            for name, doc, value in ((INTENSITY_PROVIDER_REQUESTS_TOTAL, "HTTP requests made to the intensity API.",
                                      stats.requests),
                                     (INTENSITY_PROVIDER_SUCCESSES_TOTAL, "Polls that stored a good value.",
                                      stats.successes)):
                fam = CounterMetricFamily(name, doc, labels=labels)
                fam.add_metric([stats.provider, zone], value)
                yield fam
            errors = _counter(INTENSITY_PROVIDER_ERRORS_TOTAL, "Failed requests to the intensity API, by reason.",
                              labels + ["reason"])
            for reason, count in sorted(stats.errors.items()):
                errors.add_metric([stats.provider, zone, reason], count)
            yield errors
        if fc is not None:
            hz = [zone, f"{fc.horizon_s / 3600:g}"]
            lo = _gauge(GRID_INTENSITY_FORECAST_MIN_GRAMS_PER_KWH,
                        "Lowest forecast intensity over the horizon (gCO2e/kWh).", ["zone", "horizon_hours"])
            lo.add_metric(hz, fc.min_g_per_kwh)
            mean = _gauge(GRID_INTENSITY_FORECAST_MEAN_GRAMS_PER_KWH,
                          "Time-weighted mean forecast intensity over the horizon (gCO2e/kWh).",
                          ["zone", "horizon_hours"])
            mean.add_metric(hz, fc.mean_g_per_kwh)
            best = _gauge(GRID_INTENSITY_LOWEST_WINDOW_START_SECONDS,
                          "Seconds until the lowest-intensity window of the given length starts (0: now).",
                          ["zone", "horizon_hours", "window_hours"])
            best.add_metric(hz + [f"{fc.window_s / 3600:g}"], fc.best_window_in_s)
            yield from (lo, mean, best)

    def _last_runs(self, snap: Snapshot) -> Iterator[Metric]:
        success = _gauge(COLLECTOR_SUCCESS, "1 if the collector's last run succeeded.", ["collector"])
        duration = _gauge(COLLECTOR_DURATION_SECONDS, "Duration of the collector's last run (s).", ["collector"])
        for name, st in sorted(snap.collectors.items()):
            success.add_metric([name], 1 if st.success else 0)
            duration.add_metric([name], st.duration_s)
        yield from (success, duration)

    def _health(self, snap: Snapshot) -> Iterator[Metric]:
        age = _gauge(COLLECTOR_LAST_RUN_AGE_SECONDS, "Seconds since the collector last ran.", ["collector"])
        now = self.clock()
        for name, st in sorted(snap.collectors.items()):
            age.add_metric([name], max(now - st.last_time, 0.0))
        yield age
        discarded = _gauge(STATE_DISCARDED_ENTRIES, "Damaged entries of the saved state set aside at start-up "
                           "(a copy is kept beside the state file); 0 when the state loaded intact.")
        discarded.add_metric([], snap.state_discarded)
        failed = _counter(STATE_WRITE_FAILURES_TOTAL, "Failed writes of the counter state since start, by file: "
                          "checkpoint (after a sample; while it fails the exposed counters stay at their "
                          "last saved values) or durable (every persist interval).", ["file"])
        for name, n in sorted(snap.state_write_failures.items()):
            failed.add_metric([name], n)
        yield from (discarded, failed)


_EMISSIONS_DOC = {"node": "Operational emissions of the node's rest (gCO2e): only the energy its GPUs and "
                          "CPUs did not already count, so no joule is counted twice."}


def _gpu_labels(d: DeviceSnapshot) -> list[str]:
    """The values of ``GPU_LABELS`` for one GPU."""
    return [str(d.identity.index), d.identity.uuid, d.identity.vendor]


def _slot_order(slot: str) -> list[tuple[int, int | str]]:
    """GPU slots ("3", "3.1") in numeric order; anything else after, never an error."""
    return [(0, int(x)) if x.isdigit() else (1, x) for x in slot.split(".")]


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)

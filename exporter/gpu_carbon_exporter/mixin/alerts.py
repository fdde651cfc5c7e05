"""Health alerts (prefix ``GpuCarbon``): each carries severity, summary, a templated
description that names the node and the value, and a runbook_url into docs/runbooks.md."""
from __future__ import annotations

from ..kinds import kinds
from ..names import (
    COLLECTOR_LAST_RUN_AGE_SECONDS, COLLECTOR_SUCCESS, GPU__POWER_WATTS__RATE, GPU_POWER_LIMIT_WATTS,
    GRID_INTENSITY_AGE_SECONDS, GRID_INTENSITY_FALLBACK, GRID_INTENSITY_SOURCE_INFO, INTENSITY_PROVIDER_UP,
    NODE__GPU_UNATTRIBUTED_ENERGY_RATIO__RATE, NODE__JOB_INFO__COUNT, SCRAPE_ERRORS_TOTAL, STATE_DISCARDED_ENTRIES,
)
from .promql import by, kinds_selector, on
from .settings import NODE, Settings, seconds

WHERE = "{{ $labels.node }}{{ with $labels.site }} (site {{ . }}){{ end }}"


def alert(s: Settings, name: str, expr: str, severity: str, summary: str, description: str,
          for_: str | None = None) -> dict:
    rule: dict = {"alert": name, "expr": expr}
    if for_ and for_ != "0s":
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description, "runbook_url": s.runbook(name)}
    return rule


def _exporter(s: Settings) -> list[dict]:
    sel = s.selector
    return [
        alert(s, "GpuCarbonExporterDown", f"up{{{sel}}} == 0", "critical",
              "A gpu-carbon-exporter target is down.",
              f"Prometheus cannot scrape {{{{ $labels.instance }}}} on {WHERE}: no energy or carbon "
              "is recorded for it (the exporter recovers the energy from hardware counters on restart).", "5m"),
        alert(s, "GpuCarbonExporterAbsent", f"absent(up{{{sel}}})", "critical",
              "No gpu-carbon-exporter target is being scraped.",
              "Prometheus has no target in scrape job {{ $labels.job }}: check the scrape configuration or "
              "service discovery.",
              "15m"),
        alert(s, "GpuCarbonScrapeSlow",
              f"scrape_duration_seconds{{{sel}}} > {0.8 * seconds(s.scrape_timeout):g}", "warning",
              "Scraping gpu-carbon-exporter takes most of the scrape timeout.",
              f"Scraping {{{{ $labels.instance }}}} on {WHERE} took {{{{ $value | humanizeDuration }}}}, "
              f"over 80 % of the {s.scrape_timeout} scrape timeout.", "15m"),
    ]


def _collectors(s: Settings) -> list[dict]:
    return [
        # Device sources only: the intensity provider has its own signal (GpuCarbonIntensityProviderFailing;
        # exporters before it reported collector="carbon" here) and the state file its own alert.
        # drm_clients is no device source: its failures degrade the per-process split only (its own alert).
        alert(s, "GpuCarbonCollectorFailing", f'{COLLECTOR_SUCCESS}{{collector!~"carbon|state|drm_clients"}} == 0',
              "warning", "A gpu-carbon-exporter device source is failing.",
              f"Device source {{{{ $labels.collector }}}} on {WHERE} reached none of its devices in its last run.",
              "10m"),
        alert(s, "GpuCarbonDrmClientsFailing", f'{COLLECTOR_SUCCESS}{{collector="drm_clients"}} == 0', "warning",
              "gpu-carbon-exporter cannot read every AMD or Intel GPU process's usage stats.",
              f"On {WHERE} the scan of /proc for DRM client stats keeps failing (an unreadable /proc, a process's "
              "files denied, stats that do not parse, or a GPU file mapped to no PCI device): the per-process "
              "split of AMD and Intel GPUs' energy is degraded, their energy is not. The exporter log names the file.",
              "30m"),
        alert(s, "GpuCarbonStatePersistFailing", f'{COLLECTOR_SUCCESS}{{collector="state"}} == 0', "warning",
              "gpu-carbon-exporter cannot save its counters.",
              f"The exporter on {WHERE} failed to write its state file in its last attempt: after a restart its "
              "counters resume from the last good save.", "10m"),
        alert(s, "GpuCarbonSamplerStale",
              # Only collectors that ran: a source that never opened reports an ever-growing age. The DRM client
              # stats run when a GPU source asks (none while its only cards are down): no sign of a stuck sampler.
              f'{COLLECTOR_LAST_RUN_AGE_SECONDS}{{collector!="drm_clients"}} > {s.sampler_stale_seconds:g} '
              f"and {COLLECTOR_SUCCESS} == 1", "critical",
              "The gpu-carbon-exporter sampler is stuck.",
              f"Collector {{{{ $labels.collector }}}} on {WHERE} last ran {{{{ $value | humanizeDuration }}}} ago.",
              "5m"),
        alert(s, "GpuCarbonScrapeSectionFailing", f"increase({SCRAPE_ERRORS_TOTAL}[10m]) > 0", "warning",
              "A section of the gpu-carbon-exporter exposition fails to build.",
              f"Section {{{{ $labels.section }}}} on {WHERE} failed {{{{ $value | humanize }}}} times "
              "in 10 minutes and was left out of /metrics.", "10m"),
        alert(s, "GpuCarbonDeviceDown", f'{kinds_selector((k.name for k in kinds()), "up")} == 0', "warning",
              "A GPU or power sensor stopped answering.",
              "{{ $labels.__name__ }}{{ with $labels.uuid }} ({{ . }}){{ end }}{{ with $labels.rail }} ({{ . }})"
              f"{{{{ end }}}}{{{{ with $labels.zone }}}} ({{{{ . }}}}){{{{ end }}}} on {WHERE} "
              "is down: its energy is not counted until it answers again.", "5m"),
        alert(s, "GpuCarbonStateDiscarded", f"{STATE_DISCARDED_ENTRIES} > 0", "info",
              "Damaged entries of the saved counters were set aside at start-up.",
              f"{{{{ $value }}}} entries of the state file on {WHERE} were damaged; a copy is kept beside it.", None),
        alert(s, "GpuCarbonCounterReset",
              # The device energy counters: distinct label sets once resets() drops the names (a GPU's
              # emission, embodied and water counters share theirs), and a lost state resets them all.
              f'{by(NODE)} (resets({kinds_selector(_measured(), "energy_joules_total")}[1h])) > 0',
              "warning", "gpu-carbon-exporter energy counters went backwards.",
              f"{{{{ $value }}}} counter resets on {WHERE} in the last hour: the exporter lost its state "
              "(no state.path, or a damaged or foreign state file).", None),
    ]


def _measured() -> list[str]:
    """Kinds whose energy is measured, not estimated (kinds.py): the counters a lost state resets."""
    return [k.name for k in kinds() if not k.estimate]


def _intensity(s: Settings) -> list[dict]:
    node_zone = ", ".join((*NODE, "zone"))
    # The value in force comes from the configured fallback (not the live provider's last good value):
    # its source is not the live provider's name.
    live = f'label_replace({INTENSITY_PROVIDER_UP}, "source", "$1", "provider", "(.*)")'
    return [
        alert(s, "GpuCarbonIntensityProviderFailing", f"{INTENSITY_PROVIDER_UP} == 0", "warning",
              "A grid intensity provider is failing; emissions use its last good or the fallback value.",
              f"The {{{{ $labels.provider }}}} intensity provider for zone {{{{ $labels.zone }}}} on {WHERE} has "
              "failed for 10 minutes. Degraded, not dead: energy is counted as before, and emissions use the last "
              "good value (up to max_age_seconds), then the configured fallback.", "10m"),
        alert(s, "GpuCarbonIntensityFallback",
              f"{GRID_INTENSITY_SOURCE_INFO} and on ({node_zone}) ({GRID_INTENSITY_FALLBACK} == 1) "
              f"unless on ({node_zone}, source) {live}", "warning",
              "Grid intensity is on its configured fallback value.",
              f"Emissions for zone {{{{ $labels.zone }}}} on {WHERE} use the configured fallback "
              "({{ $labels.source }}): the live provider has failed past the age of its last good value.", "15m"),
        alert(s, "GpuCarbonIntensityStale",
              f"{GRID_INTENSITY_AGE_SECONDS} > {s.intensity_stale_seconds:g}", "warning",
              "Grid intensity has not been refreshed.",
              f"The intensity for zone {{{{ $labels.zone }}}} on {WHERE} is {{{{ $value | humanizeDuration }}}} old.",
              "15m"),
    ]


def _readings(s: Settings) -> list[dict]:
    gpu = (*NODE, "uuid")
    rate = f"{GPU__POWER_WATTS__RATE}{s.rate_window}"
    limit = f"max by ({', '.join(gpu)}) ({GPU_POWER_LIMIT_WATTS})"
    unattributed = f"{NODE__GPU_UNATTRIBUTED_ENERGY_RATIO__RATE}{s.waste_window}"
    return [
        alert(s, "GpuCarbonPowerAtLimit",
              f"max by ({', '.join((*gpu, 'gpu'))}) ({rate}) >= {on(gpu)} group_left () "
              f"({s.power_limit_share:g} * {limit})", "info",
              "A GPU runs at its power limit.",
              f"GPU {{{{ $labels.gpu }}}} on {WHERE} drew {{{{ $value | humanize }}}}W, at its power limit, "
              "for 30 minutes: its work is power-capped.", "30m"),
        alert(s, "GpuCarbonImplausiblePower",
              f"max by ({', '.join((*gpu, 'gpu'))}) ({rate}) > {on(gpu)} group_left () "
              f"({s.implausible_share:g} * {limit})", "warning",
              "A GPU's energy counter implies power far above its limit.",
              f"GPU {{{{ $labels.gpu }}}} on {WHERE} counts {{{{ $value | humanize }}}}W, over "
              f"{s.implausible_share:g} times its power limit: a counter or driver fault.", "10m"),
        alert(s, "GpuCarbonUnattributedHigh",
              f"{unattributed} > {s.unattributed_share:g} and {on(NODE)} "
              f"max_over_time({NODE__JOB_INFO__COUNT}[1d])", "warning",
              "Much GPU energy is not attributed to any job on a node that runs jobs.",
              f"{{{{ $value | humanizePercentage }}}} of the GPU energy on {WHERE} ran with no job over the last "
              f"{s.waste_window}: a job mapper may be failing.", "1h"),
    ]


def health_group(s: Settings) -> dict:
    # Every condition here lasts minutes (each has a `for` of 5m or more, or is a state): a minute's
    # interval costs a quarter of the evaluations (docs/scale.md) and delays no alert materially.
    return {"name": "gpu_carbon_health", "interval": s.health_interval,
            "rules": _exporter(s) + _collectors(s) + _intensity(s) + _readings(s)}

"""The promtool cases of prometheus/tests/alerts_test.yml: each health alert fires in one case
and must stay silent in another. Regenerate with ``python tests/alert_cases.py``;
tests/test_rules.py checks the committed file equals this output."""
from __future__ import annotations

from pathlib import Path

import yaml

from gpu_carbon_exporter.mixin import Settings

OUT = Path(__file__).resolve().parent.parent / "prometheus" / "tests" / "alerts_test.yml"
S = Settings()
T = 'node="a",site="s1"'  # target labels
SCRAPE = f'job="gpu-carbon-exporter",instance="a:9835",{T}'
WHERE = "a (site s1)"


def case(name, series, alert, t, fire_labels, summary, description, quiet_series, quiet_t=None):
    """Two tests: ``series`` fires ``alert`` at ``t``; ``quiet_series`` must not."""
    exp = {"exp_labels": fire_labels, "exp_annotations": {
        "summary": summary, "description": description, "runbook_url": S.runbook(alert)}}
    return [{"name": f"{name}: fires", "interval": "1m", "input_series": series,
             "alert_rule_test": [{"eval_time": t, "alertname": alert, "exp_alerts": [exp]}]},
            {"name": f"{name}: silent", "interval": "1m", "input_series": quiet_series,
             "alert_rule_test": [{"eval_time": quiet_t or t, "alertname": alert, "exp_alerts": []}]}]


def s(series, values):
    return {"series": series, "values": values}


def gpu_power(watts, limit, minutes):
    return [s(f'gpu_carbon_gpu_energy_joules_total{{gpu="0",uuid="GPU-a0",method="counter",{T}}}',
              f"0+{watts * 60}x{minutes}"),
            s(f'gpu_carbon_gpu_power_limit_watts{{gpu="0",uuid="GPU-a0",{T}}}', f"{limit}x{minutes}")]


def unattributed(with_jobs):
    out = [s(f'gpu_carbon_gpu_energy_joules_total{{gpu="0",uuid="GPU-a0",method="counter",{T}}}', "0+24000x80"),
           s(f'gpu_carbon_gpu_unattributed_energy_joules_total{{gpu="0",uuid="GPU-a0",{T}}}', "0+12000x80")]
    if with_jobs:
        out.append(s(f'gpu_carbon_job_info{{job_id="1",scheduler="slurm",team="t",{T}}}', "1x80"))
    return out


def cases() -> list[dict]:
    sev = lambda level, **kw: {"severity": level, **kw}  # noqa: E731
    c = []
    c += case("exporter down", [s(f"up{{{SCRAPE}}}", "1x5 0x10")], "GpuCarbonExporterDown", "15m",
              sev("critical", job="gpu-carbon-exporter", instance="a:9835", node="a", site="s1"),
              "A gpu-carbon-exporter target is down.",
              f"Prometheus cannot scrape a:9835 on {WHERE}: no energy or carbon is recorded for it (the exporter "
              "recovers the energy from hardware counters on restart).", [s(f"up{{{SCRAPE}}}", "1x15")])
    c += case("exporter absent", [s('up{job="node"}', "1x20")], "GpuCarbonExporterAbsent", "16m",
              sev("critical", job="gpu-carbon-exporter"), "No gpu-carbon-exporter target is being scraped.",
              "Prometheus has no target in scrape job gpu-carbon-exporter: check the scrape configuration or "
              "service discovery.",
              [s(f"up{{{SCRAPE}}}", "0x20")])
    c += case("scrape slow", [s(f"scrape_duration_seconds{{{SCRAPE}}}", "9x30")], "GpuCarbonScrapeSlow", "20m",
              sev("warning", job="gpu-carbon-exporter", instance="a:9835", node="a", site="s1"),
              "Scraping gpu-carbon-exporter takes most of the scrape timeout.",
              f"Scraping a:9835 on {WHERE} took 9s, over 80 % of the 10s scrape timeout.",
              [s(f"scrape_duration_seconds{{{SCRAPE}}}", "5x30")])
    # Not device sources: a failing intensity provider (collector="carbon" before it had its own signal)
    # and the state file have their own alerts; the fire case must name nvml alone.
    others = [s(f'gpu_carbon_collector_success{{collector="carbon",{T}}}', "0x20"),
              s(f'gpu_carbon_collector_success{{collector="state",{T}}}', "0x20")]
    c += case("collector failing", [s(f'gpu_carbon_collector_success{{collector="nvml",{T}}}', "0x20"), *others],
              "GpuCarbonCollectorFailing", "15m", sev("warning", collector="nvml", node="a", site="s1"),
              "A gpu-carbon-exporter device source is failing.",
              f"Device source nvml on {WHERE} reached none of its devices in its last run.",
              [s(f'gpu_carbon_collector_success{{collector="nvml",{T}}}', "1x20"), *others])
    # Every vendor's GPU source is a device source: an AMD node whose amdgpu source fails (its NVIDIA
    # and Intel sources answering) is named alone.
    fine = [s(f'gpu_carbon_collector_success{{collector="{name}",{T}}}', "1x20") for name in ("nvml", "intel_gpu")]
    c += case("AMD collector failing", [s(f'gpu_carbon_collector_success{{collector="amdgpu",{T}}}', "0x20"), *fine],
              "GpuCarbonCollectorFailing", "15m", sev("warning", collector="amdgpu", node="a", site="s1"),
              "A gpu-carbon-exporter device source is failing.",
              f"Device source amdgpu on {WHERE} reached none of its devices in its last run.",
              [s(f'gpu_carbon_collector_success{{collector="amdgpu",{T}}}', "1x20"), *fine])
    # The DRM client stats' scan is no device source: its own alert, after 30 minutes.
    cards = [s(f'gpu_carbon_collector_success{{collector="amdgpu",{T}}}', "1x40")]
    c += case("DRM client stats failing", [s(f'gpu_carbon_collector_success{{collector="drm_clients",{T}}}', "0x40"),
                                           *cards],
              "GpuCarbonDrmClientsFailing", "35m", sev("warning", collector="drm_clients", node="a", site="s1"),
              "gpu-carbon-exporter cannot read every AMD or Intel GPU process's usage stats.",
              f"On {WHERE} the scan of /proc for DRM client stats keeps failing (an unreadable /proc, a process's "
              "files denied, stats that do not parse, or a GPU file mapped to no PCI device): the per-process "
              "split of AMD and Intel GPUs' energy is degraded, their energy is not. The exporter log names the file.",
              [s(f'gpu_carbon_collector_success{{collector="drm_clients",{T}}}', "0x20 1x20"), *cards], "35m")
    c += case("DRM client stats failing is no device source failing",
              [s(f'gpu_carbon_collector_success{{collector="drm_clients",{T}}}', "0x40"), *cards],
              "GpuCarbonCollectorFailing", "35m", sev("warning", collector="amdgpu", node="a", site="s1"),
              "A gpu-carbon-exporter device source is failing.",
              f"Device source amdgpu on {WHERE} reached none of its devices in its last run.",
              [s(f'gpu_carbon_collector_success{{collector="drm_clients",{T}}}', "0x40"), *cards])[1:]
    c += case("state persist failing", [s(f'gpu_carbon_collector_success{{collector="state",{T}}}', "0x20")],
              "GpuCarbonStatePersistFailing", "15m", sev("warning", collector="state", node="a", site="s1"),
              "gpu-carbon-exporter cannot save its counters.",
              f"The exporter on {WHERE} failed to write its state file in its last attempt: after a restart its "
              "counters resume from the last good save.",
              [s(f'gpu_carbon_collector_success{{collector="state",{T}}}', "1x20"),
               s(f'gpu_carbon_collector_success{{collector="nvml",{T}}}', "0x20")])
    ran = s(f'gpu_carbon_collector_success{{collector="nvml",{T}}}', "1x10")
    never = s(f'gpu_carbon_collector_success{{collector="rapl",{T}}}', "0x10")  # never opened: age grows, no alert
    # The DRM client stats not asked for (the AMD cards down): their age grows, their last run fine; no alert.
    unasked = [s(f'gpu_carbon_collector_last_run_age_seconds{{collector="drm_clients",{T}}}', "0+60x10"),
               s(f'gpu_carbon_collector_success{{collector="drm_clients",{T}}}', "1x10")]
    c += case("sampler stale", [s(f'gpu_carbon_collector_last_run_age_seconds{{collector="nvml",{T}}}', "120x10"), ran,
                                s(f'gpu_carbon_collector_last_run_age_seconds{{collector="rapl",{T}}}', "0+60x10"),
                                never, *unasked],
              "GpuCarbonSamplerStale", "7m", sev("critical", collector="nvml", node="a", site="s1"),
              "The gpu-carbon-exporter sampler is stuck.", f"Collector nvml on {WHERE} last ran 2m 0s ago.",
              [s(f'gpu_carbon_collector_last_run_age_seconds{{collector="nvml",{T}}}', "1x10"), ran,
               s(f'gpu_carbon_collector_last_run_age_seconds{{collector="rapl",{T}}}', "0+60x10"), never, *unasked])
    c += case("section failing", [s(f'gpu_carbon_scrape_errors_total{{section="jobs",{T}}}', "0+1x30")],
              "GpuCarbonScrapeSectionFailing", "25m", sev("warning", section="jobs", node="a", site="s1"),
              "A section of the gpu-carbon-exporter exposition fails to build.",
              f"Section jobs on {WHERE} failed 10 times in 10 minutes and was left out of /metrics.",
              [s(f'gpu_carbon_scrape_errors_total{{section="jobs",{T}}}', "3x30")])
    c += case("device down", [s(f'gpu_carbon_gpu_up{{gpu="1",uuid="GPU-a1",{T}}}', "0x10")], "GpuCarbonDeviceDown",
              "8m", sev("warning", gpu="1", uuid="GPU-a1", node="a", site="s1"),
              "A GPU or power sensor stopped answering.",
              f"gpu_carbon_gpu_up (GPU-a1) on {WHERE} is down: its energy is not counted until it answers again.",
              [s(f'gpu_carbon_gpu_up{{gpu="1",uuid="GPU-a1",{T}}}', "1x10")])
    intel = 'gpu="0",uuid="intel-0000:3a:00.0",vendor="intel"'
    c += case("Intel GPU down", [s(f"gpu_carbon_gpu_up{{{intel},{T}}}", "0x10")], "GpuCarbonDeviceDown", "8m",
              sev("warning", gpu="0", uuid="intel-0000:3a:00.0", vendor="intel", node="a", site="s1"),
              "A GPU or power sensor stopped answering.",
              f"gpu_carbon_gpu_up (intel-0000:3a:00.0) on {WHERE} is down: its energy is not counted until it "
              "answers again.", [s(f"gpu_carbon_gpu_up{{{intel},{T}}}", "1x10")])
    c += case("state discarded", [s(f"gpu_carbon_state_discarded_entries{{{T}}}", "3x5")], "GpuCarbonStateDiscarded",
              "2m", sev("info", node="a", site="s1"),
              "Damaged entries of the saved counters were set aside at start-up.",
              f"3 entries of the state file on {WHERE} were damaged; a copy is kept beside it.",
              [s(f"gpu_carbon_state_discarded_entries{{{T}}}", "0x5")])
    reset = f'gpu_carbon_gpu_energy_joules_total{{gpu="0",uuid="GPU-a0",method="counter",{T}}}'
    # A GPU's other counters share their label set once a function drops the names: the rule must not trip on it.
    same = [s(f'gpu_carbon_gpu_{m}_total{{gpu="0",uuid="GPU-a0",{T}}}', "0+1x20")
            for m in ("emissions_grams", "embodied_emissions_grams", "water_liters")]
    c += case("counter reset", [s(reset, "0+100x10 0+100x10"), *same], "GpuCarbonCounterReset", "15m",
              sev("warning", node="a", site="s1"), "gpu-carbon-exporter energy counters went backwards.",
              f"1 counter resets on {WHERE} in the last hour: the exporter lost its state (no state.path, or a "
              "damaged or foreign state file).", [s(reset, "0+100x20"), *same])
    provider = f'provider="electricitymaps",zone="DE",{T}'
    c += case("intensity provider failing", [s(f"gpu_carbon_intensity_provider_up{{{provider}}}", "0x20")],
              "GpuCarbonIntensityProviderFailing", "15m",
              sev("warning", provider="electricitymaps", zone="DE", node="a", site="s1"),
              "A grid intensity provider is failing; emissions use its last good or the fallback value.",
              f"The electricitymaps intensity provider for zone DE on {WHERE} has failed for 10 minutes. Degraded, "
              "not dead: energy is counted as before, and emissions use the last good value (up to max_age_seconds), "
              "then the configured fallback.",
              [s(f"gpu_carbon_intensity_provider_up{{{provider}}}", "1x20")])

    def serving(source: str) -> list[dict]:  # the provider failing, its fallback flag up, ``source`` in force
        return [s(f"gpu_carbon_intensity_provider_up{{{provider}}}", "0x40"),
                s(f'gpu_carbon_grid_intensity_fallback{{zone="DE",{T}}}', "1x40"),
                s(f'gpu_carbon_grid_intensity_source_info{{zone="DE",source="{source}",signal="average",{T}}}', "1x40")]

    c += case("intensity on its configured fallback", serving("static"), "GpuCarbonIntensityFallback", "20m",
              sev("warning", zone="DE", source="static", signal="average", node="a", site="s1"),
              "Grid intensity is on its configured fallback value.",
              f"Emissions for zone DE on {WHERE} use the configured fallback (static): the live provider has failed "
              "past the age of its last good value.", serving("electricitymaps"))  # the last good value: silent
    c += case("intensity stale", [s(f'gpu_carbon_grid_intensity_age_seconds{{zone="DE",{T}}}', "20000x20")],
              "GpuCarbonIntensityStale", "16m", sev("warning", zone="DE", node="a", site="s1"),
              "Grid intensity has not been refreshed.", f"The intensity for zone DE on {WHERE} is 5h 33m 20s old.",
              [s(f'gpu_carbon_grid_intensity_age_seconds{{zone="DE",{T}}}', "600x20")])
    gpu = sev("info", gpu="0", uuid="GPU-a0", node="a", site="s1")
    c += case("power at limit", gpu_power(700, 700, 50), "GpuCarbonPowerAtLimit", "40m", gpu,
              "A GPU runs at its power limit.",
              f"GPU 0 on {WHERE} drew 700W, at its power limit, for 30 minutes: its work is power-capped.",
              gpu_power(300, 700, 50))
    c += case("implausible power", gpu_power(1000, 700, 30), "GpuCarbonImplausiblePower", "20m",
              {**gpu, "severity": "warning"}, "A GPU's energy counter implies power far above its limit.",
              f"GPU 0 on {WHERE} counts 1kW, over 1.2 times its power limit: a counter or driver fault.",
              gpu_power(700, 700, 30))
    c += case("unattributed", unattributed(True), "GpuCarbonUnattributedHigh", "75m",
              sev("warning", node="a", site="s1"),
              "Much GPU energy is not attributed to any job on a node that runs jobs.",
              f"50% of the GPU energy on {WHERE} ran with no job over the last 1h: a job mapper may be failing.",
              unattributed(False))
    return c


def render() -> str:
    body = {"rule_files": ["../rules/gpu-carbon-recording.yml", "../rules/gpu-carbon-alerts.yml"],
            "evaluation_interval": "1m", "group_eval_order": ["gpu_carbon_power", "gpu_carbon_health"],
            "tests": cases()}
    return ("# Generated by tests/alert_cases.py; run by tests/test_rules.py: promtool test rules alerts_test.yml\n"
            + yaml.safe_dump(body, sort_keys=False, width=200))


if __name__ == "__main__":
    OUT.write_text(render())

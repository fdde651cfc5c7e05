"""The generated rules on VictoriaMetrics (docs/scale.md): vmalert accepts every rule file, and
evaluates the recording rules against VictoriaMetrics scraping a simulated exporter; per-job kWh
and g CO2e from the rules agree with the simulator's ground truth. MetricsQL's increase() does not
extrapolate like Prometheus's, which is the difference docs/scale.md records."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_port, require_binary
from gpu_carbon_exporter.mixin import write as write_rules
from gpu_carbon_exporter.sim.scenario import GroundTruth, parse_scenario
from procs import query, wait_for_series, wait_http

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
H100 = "NVIDIA H100 80GB HBM3"


def test_vmalert_accepts_every_committed_rule_file():
    files = [*sorted((ROOT / "prometheus" / "rules").glob("*.yml")),
             *sorted((ROOT / "prometheus" / "tests" / "rules").glob("*.yml"))]
    out = subprocess.run([require_binary("vmalert"), "-dryRun", *(f"-rule={f}" for f in files)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gpu-carbon-budgets.yml" in out.stderr  # the budget rules were among them


def test_recording_rules_on_victoriametrics_match_ground_truth(tmp_path):
    vm, vmalert = require_binary("victoria-metrics"), require_binary("vmalert")
    start = time.time()
    scenario = {"name": "vm", "start_time": start, "zone": "Z", "pue": 1.2, "intensity": {"Z": [[0, 300], [20, 150]]},
                "devices": [{"model": H100, "power": {"pattern": "steps", "steps": [[0, 0], [10, 450], [32, 0]]}},
                            {"model": H100, "power": {"pattern": "steps", "steps": [[0, 0], [10, 250], [32, 0]]}}],
                "jobs": [{"id": "601", "user": "ann", "team": "nlp", "start_s": 10, "end_s": 32, "devices": [0]},
                         {"id": "602", "user": "bob", "team": "cv", "start_s": 10, "end_s": 32, "devices": [1]}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scenario))
    settings = {"long_interval": "1s", "window_interval": "1s", "tile": "5s"}
    (tmp_path / "budgets.yml").write_text(yaml.safe_dump({"settings": settings, "budgets": [
        {"name": "nlp", "scope": "team", "match": "nlp", "limit": "1 kg", "window": "7d"}]}))
    rules = write_rules(tmp_path / "rules", tmp_path / "budgets.yml")
    port, vm_port, alert_port = free_port(), free_port(), free_port()
    (tmp_path / "scrape.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "200ms"},
        "scrape_configs": [{"job_name": "gpu-carbon-exporter", "static_configs": [{
            "targets": [f"127.0.0.1:{port}"],
            "labels": {"node": "gpu-01", "site": "ams1", "fleet": "datacenter", "cluster": "prod"}}]}]}))
    procs = [subprocess.Popen([sys.executable, "-m", "gpu_carbon_exporter", "--simulate", str(tmp_path / "s.yaml"),
                               "--sampling.interval", "0.1", "--web.listen-address", f"127.0.0.1:{port}"],
                              stdout=open(tmp_path / "exporter.log", "w"), stderr=subprocess.STDOUT)]
    base = f"http://127.0.0.1:{vm_port}"
    try:
        procs.append(subprocess.Popen([vm, f"-storageDataPath={tmp_path / 'vm'}",
                                       f"-httpListenAddr=127.0.0.1:{vm_port}",
                                       f"-promscrape.config={tmp_path / 'scrape.yml'}",
                                       "-search.latencyOffset=0s",  # else the last 30 s are not answered
                                       "-search.disableCache"],  # recorded series are read back at once
                                      stdout=open(tmp_path / "vm.log", "w"), stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=procs[0])
        wait_http(f"{base}/health", proc=procs[1])
        procs.append(subprocess.Popen([vmalert, *(f"-rule={p}" for p in rules), f"-datasource.url={base}",
                                       f"-remoteWrite.url={base}", "-evaluationInterval=1s",
                                       "-remoteWrite.flushInterval=1s", f"-httpListenAddr=127.0.0.1:{alert_port}",
                                       f"-notifier.url=http://127.0.0.1:{free_port()}"],  # alerts: not this test's
                                      stdout=open(tmp_path / "vmalert.log", "w"), stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{alert_port}/health", proc=procs[2])
        assert time.time() - start < 9, "the stack must be up before the jobs start"
        time.sleep(max(0.0, start + 40 - time.time()))
        wait_for_series(base, "team:gpu_carbon_job_emissions_grams:increase7d", timeout=20)
        got = {(r["metric"]["__name__"], r["metric"].get("job_id") or r["metric"].get("team")): float(r["value"][1])
               for q in ("job:gpu_carbon_job_energy_kwh:increase1h", "job:gpu_carbon_job_emissions_grams:increase1h",
                         "team:gpu_carbon_job_emissions_grams:increase1d")
               for r in query(base, q)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    truth = GroundTruth(parse_scenario(scenario))
    jobs = {j.id: j for j in truth.sc.jobs}
    want = {("job:gpu_carbon_job_energy_kwh:increase1h", "601"): truth.job_allocated_j(jobs["601"], 0, 45) / 3.6e6,
            ("job:gpu_carbon_job_energy_kwh:increase1h", "602"): truth.job_allocated_j(jobs["602"], 0, 45) / 3.6e6,
            ("job:gpu_carbon_job_emissions_grams:increase1h", "601"): truth.job_allocated_g(jobs["601"], 0, 45),
            ("team:gpu_carbon_job_emissions_grams:increase1d", "nlp"): truth.job_allocated_g(jobs["601"], 0, 45)}
    for key, w in want.items():
        print(f"{key[0]} {key[1]}: VictoriaMetrics {got[key]:.6g}, truth {w:.6g}, "
              f"error {100 * (got[key] / w - 1):+.3f} %")
    for key, w in want.items():
        assert got[key] == pytest.approx(w, rel=0.01), key

"""Long horizons without waiting: 31 days of simulated history backfilled into a real
Prometheus (`promtool tsdb create-blocks-from openmetrics`, then `create-blocks-from rules`
for the tiles that windows longer than a day sum), then a 30-day team budget evaluated on it
by the generated rules."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from gpu_carbon_exporter.mixin import load_budgets, render, rule_files
from gpu_carbon_exporter.sim.history import render_history
from gpu_carbon_exporter.sim.scenario import GroundTruth, parse_scenario

from conftest import free_port, require_binary
from procs import query, wait_for_series, wait_http

pytestmark = pytest.mark.e2e
DAY = 86400
STEP = 60  # finer than the 5-minute tile: each tile needs samples inside it
TARGET = {"job": "gpu-carbon-exporter", "instance": "a:9835", "node": "a", "site": "s1", "fleet": "datacenter"}
# Three nlp jobs: one that ended 29 days ago (only the backfilled join can still name its team),
# one mid-month and one recent; a vision job for contrast.
SCENARIO = {
    "zone": "DEU", "pue": 1.2, "intensity": {"DEU": [[0, 380], [15 * DAY, 250]]},
    "devices": [{"model": "NVIDIA H100 80GB HBM3", "count": 2, "power": {"pattern": "constant", "watts": 600}}],
    "jobs": [
        {"id": "101", "user": "ann", "team": "nlp", "start_s": 1 * DAY, "end_s": 2 * DAY, "devices": [0]},
        {"id": "102", "user": "bob", "team": "nlp", "start_s": 14 * DAY, "end_s": 16 * DAY, "devices": [0]},
        {"id": "103", "user": "cat", "team": "nlp", "start_s": 29 * DAY, "end_s": 30 * DAY, "devices": [0]},
        {"id": "201", "user": "dan", "team": "vision", "start_s": 5 * DAY, "end_s": 25 * DAY, "devices": [1]},
    ],
}


def prometheus(tmp: Path, data: Path, rules: list[Path]) -> subprocess.Popen:
    port = free_port()
    cfg = tmp / f"prometheus-{port}.yml"
    cfg.write_text(yaml.safe_dump({"global": {"evaluation_interval": "1s"},
                                   "rule_files": [str(p) for p in rules]}))
    proc = subprocess.Popen([require_binary("prometheus"), f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                             "--storage.tsdb.retention.time=90d", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=open(tmp / f"prometheus-{port}.log", "w"), stderr=subprocess.STDOUT)
    proc.base = f"http://127.0.0.1:{port}"
    wait_http(f"{proc.base}/-/ready", proc=proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def promtool(*args: str) -> None:
    run = subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_30_day_budget_on_backfilled_history(tmp_path):
    end_s = 31 * DAY
    now = time.time() // STEP * STEP
    epoch = now - end_s
    sc = parse_scenario(SCENARIO)
    (tmp_path / "history.om").write_text(render_history(sc, epoch, end_s, STEP, TARGET))
    data = tmp_path / "data"
    # Month-long blocks: with the default 2-h blocks the import takes ~70 times longer.
    promtool("tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=744h", str(tmp_path / "history.om"),
             str(data))
    # Windows longer than a day sum tiles: backfill the tiles (they read raw series only) from the raw
    # history, at the tile's interval.
    budgets = tmp_path / "budgets.yml"
    budgets.write_text(yaml.safe_dump({"settings": {"long_interval": "1s", "budget_for": "0s"}, "budgets": [
        {"name": "nlp-month", "scope": "team", "match": "nlp", "limit": "20 kg", "window": "30d"}]}))
    settings, items = load_budgets(budgets)
    files = rule_files(settings, items)
    power = tmp_path / "tiles.yml"
    tiles = [{**g, "rules": [r for r in g["rules"] if r["record"].startswith("team:")]}  # what team windows read
             for g in files["gpu-carbon-recording.yml"]["groups"] if g["name"] == "gpu_carbon_tiles"]
    power.write_text(render({"groups": tiles}))
    raw = prometheus(tmp_path, data, [])
    try:
        # the imported month answers queries before the tiles are computed from it (an empty answer
        # leaves promtool nothing to write: one clean-clone run found no backfill directory)
        wait_for_series(raw.base, "count(last_over_time(gpu_carbon_job_energy_joules_total[32d]))", timeout=60)
        promtool("tsdb", "create-blocks-from", "rules", f"--url={raw.base}", f"--start={int(epoch)}",
                 f"--end={int(now)}", f"--eval-interval={settings.tile}", f"--output-dir={tmp_path / 'backfill'}",
                 str(power))
    finally:
        stop(raw)
    for block in (tmp_path / "backfill").iterdir():
        block.rename(data / block.name)
    paths = []
    for name, content in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_text(render(content))
    live = prometheus(tmp_path, data, paths)
    try:
        wait_for_series(live.base, 'budget:gpu_carbon_budget_usage:ratio{budget="nlp-month"} > 0', timeout=60)
        for expr in ('budget:gpu_carbon_budget_usage:increase{budget="nlp-month"}',
                     'team:gpu_carbon_job_emissions_grams:increase30d{team="vision"}',
                     'ALERTS{alertname="GpuCarbonBudgetExceeded", alertstate="firing"}'):  # every group evaluated
            wait_for_series(live.base, expr, timeout=60)
        at = time.time()
        usage = float(query(live.base, 'budget:gpu_carbon_budget_usage:increase'
                                       '{budget="nlp-month"}', at)[0]["value"][1])
        vision = float(query(live.base, 'team:gpu_carbon_job_emissions_grams:increase30d'
                                        '{team="vision"}', at)[0]["value"][1])
        alerts = [a for a in query_alerts(live.base) if a["labels"]["alertname"] == "GpuCarbonBudgetExceeded"]
    finally:
        stop(live)
    truth = GroundTruth(sc)
    since = at - 30 * DAY - epoch  # the window's start in scenario seconds
    want = {team: sum(truth.job_allocated_g(j, max(since, 0), end_s) for j in sc.jobs if j.team == team)
            for team in ("nlp", "vision")}
    print(f"nlp 30d: rules {usage:.1f} g, truth {want['nlp']:.1f} g; "
          f"vision {vision:.1f} g, truth {want['vision']:.1f} g")
    assert usage == pytest.approx(want["nlp"], rel=0.01)
    assert vision == pytest.approx(want["vision"], rel=0.01)
    assert usage > 20_000  # over the budget only with the job that ended 29 days ago (~6 kg)
    assert alerts and alerts[0]["state"] == "firing" and alerts[0]["labels"]["team"] == "nlp"


def query_alerts(base: str) -> list[dict]:
    import requests

    r = requests.get(f"{base}/api/v1/alerts", timeout=10)
    r.raise_for_status()
    return r.json()["data"]["alerts"]

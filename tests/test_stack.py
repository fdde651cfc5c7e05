"""`gpu-carbon-exporter stack`, the local stack in one command: it starts simulated exporters,
Prometheus with the generated rules and Alertmanager from the local binaries, prints their URLs,
and stops every process on Ctrl-C. (tests/test_e2e_rules.py drives the same LocalStack class with
its own nodes, a crash and a Prometheus outage.)"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from conftest import require_binary
from procs import query, wait_for_series

pytestmark = __import__("pytest").mark.e2e


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def ctrl_c(proc: subprocess.Popen) -> str:
    """Ctrl-C to the stack; what it printed. A stack that does not stop within a generous ceiling (the
    machine may be loaded) fails the test and is killed with its whole process group: nothing leaks."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def test_stack_starts_answers_and_stops_everything_on_ctrl_c(tmp_path):
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    proc = subprocess.Popen([sys.executable, "-m", "gpu_carbon_exporter", "stack", "--dir", str(tmp_path),
                             "--exporter-port", "0", "--prometheus-port", "0", "--alertmanager-port", "0",
                             "--grafana-port", "0", "--scrape-interval", "1s"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "configs, data and logs in" in line:
                break
        urls = json.loads((tmp_path / "stack.json").read_text())["urls"]
        pids = json.loads((tmp_path / "stack.json").read_text())["pids"]
        grafana = shutil.which("grafana") or shutil.which("grafana-server")
        assert set(urls) == {"gpu-01", "jetson-01", "prometheus", "alertmanager"} | ({"grafana"} if grafana else set())
        assert all(any(url in line for line in lines) for url in urls.values()), lines  # printed
        base = urls["prometheus"]
        wait_for_series(base, 'count(up{job="gpu-carbon-exporter"} == 1) == 2', timeout=30)
        # the generated rules (with the demo budgets) are loaded and evaluated
        wait_for_series(base, "node:gpu_carbon_power_watts:sum_rate5m", timeout=30)
        wait_for_series(base, "budget:gpu_carbon_budget_limit:value", timeout=30)
        nodes = {r["metric"]["node"]: r["metric"]["fleet"] for r in query(base, "gpu_carbon_build_info")}
        assert nodes == {"gpu-01": "datacenter", "jetson-01": "edge"}
        active = requests.get(f"{base}/api/v1/alertmanagers", timeout=5).json()["data"]["activeAlertmanagers"]
        assert [a["url"].split("/api/")[0] for a in active] == [urls["alertmanager"]]
    finally:
        rest = ctrl_c(proc)
    assert proc.returncode == 0, rest
    assert "stopping" in rest
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [n for n, p in pids.items() if pid_alive(p)]
    if not grafana:  # said, with where to get it
        assert "Grafana is not installed" in "".join(lines) and "grafana.com" in "".join(lines)


def test_stack_without_prometheus_says_what_to_install(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "stack", "--dir", str(tmp_path / "s")],
                         capture_output=True, text=True, env={**os.environ, "PATH": str(bin_dir)}, timeout=60)
    assert out.returncode == 1
    assert "prometheus and alertmanager not found" in out.stderr
    assert "apt-get install -y prometheus prometheus-alertmanager" in out.stderr


def test_a_taken_port_is_never_mistaken_for_our_prometheus(tmp_path):
    """A system Prometheus on 9090 would answer the readiness check: the stack takes another port."""
    import socket

    from gpu_carbon_exporter.stack import LocalStack

    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        stack = LocalStack(tmp_path, grafana=False, prometheus_port=taken, alertmanager_port=0)
        stack.prepare()
        assert stack.prometheus_port != taken
        assert any(f"port {taken} is taken" in n for n in stack.notes)


def wait_until(what: str, check, timeout: float):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = check()
        except requests.RequestException:
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_an_exporters_exit_is_reported_its_alert_fires_and_the_rest_keeps_running(tmp_path):
    """Kill one of two exporters: the stack says so and keeps running, the dead target goes down,
    GpuCarbonExporterDown reaches the stack's Alertmanager (with a link to the printed Prometheus
    address), and the other exporter keeps being scraped. `--alert-for 1s` shortens the alert's
    `for:` in the stack's copy of the rules only; the machine is loaded, so every wait has a ceiling."""
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    proc = subprocess.Popen([sys.executable, "-m", "gpu_carbon_exporter", "stack", "--dir", str(tmp_path),
                             "--exporter", "node-a=edge-nano@edge", "--exporter", "node-b=edge-nano@edge",
                             "--exporter-port", "0", "--prometheus-port", "0", "--alertmanager-port", "0",
                             "--no-grafana", "--scrape-interval", "1s", "--alert-for", "1s"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if "configs, data and logs in" in line:
                break
        info = json.loads((tmp_path / "stack.json").read_text())
        prom, am = info["urls"]["prometheus"], info["urls"]["alertmanager"]
        wait_for_series(prom, 'count(up{job="gpu-carbon-exporter"} == 1) == 2', timeout=60)
        os.kill(info["pids"]["node-b"], signal.SIGKILL)
        killed = time.time()

        def down_alert():
            alerts = requests.get(f"{am}/api/v2/alerts", timeout=5).json()
            return [a for a in alerts if a["labels"]["alertname"] == "GpuCarbonExporterDown"]

        alerts = wait_until("GpuCarbonExporterDown in Alertmanager", down_alert, timeout=120)
        assert [a["labels"]["node"] for a in alerts] == ["node-b"]
        assert alerts[0]["status"]["state"] == "active"
        assert alerts[0]["generatorURL"].startswith(prom + "/"), alerts[0]["generatorURL"]  # --web.external-url

        def targets():
            active = requests.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            return {t["labels"]["node"]: t for t in active}

        # node-a keeps being scraped: a successful scrape that began after node-b was killed and the alert seen
        seen = time.time()

        def a_scraped_since():
            t = targets()["node-a"]
            return t["health"] == "up" and timestamp(t["lastScrape"]) > seen and t

        wait_until("a fresh scrape of node-a", a_scraped_since, timeout=60)
        assert targets()["node-b"]["health"] == "down"
        assert timestamp(targets()["node-b"]["lastScrape"]) > killed
        assert pid_alive(info["pids"]["node-a"]) and pid_alive(info["pids"]["prometheus"])
        assert proc.poll() is None  # the stack itself still runs
    finally:
        rest = ctrl_c(proc)
    assert proc.returncode == 0, rest
    assert "node-b was killed by signal 9" in rest and "left down" in rest, rest
    assert rest.index("node-b was killed") < rest.index("stopping")


def timestamp(rfc3339: str) -> float:
    """Prometheus's lastScrape (RFC 3339, nanoseconds, a zone offset) as Unix time."""
    from datetime import datetime

    head, _, tail = rfc3339.partition(".")
    digits = "".join(c for c in tail if c.isdigit())
    zone = tail[len(digits):] if tail else head[19:]
    head = head[:19]
    stamp = datetime.fromisoformat(head + (zone.replace("Z", "+00:00") or "+00:00")).timestamp()
    return stamp + (float(f"0.{digits}") if digits else 0.0)


def test_help_shows_the_defaults_and_the_scrape_interval_is_the_datasources():
    """The stack scrapes at the provisioned datasource's timeInterval unless asked, and its copy of
    the datasource follows --scrape-interval, so $__rate_interval is built on the real interval."""
    import yaml

    from gpu_carbon_exporter.stack import DEFAULT_SCRAPE_INTERVAL, LocalStack, datasource

    out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "stack", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for default in ("(at most 30s; default 15s)", "(default 9842)", "default 9090", "default 9093", "default 3000"):
        assert default in text, default
    committed = yaml.safe_load((Path(__file__).parents[1] / "grafana/provisioning/datasources/prometheus.yaml")
                               .read_text())
    assert committed["datasources"][0]["jsonData"]["timeInterval"] == DEFAULT_SCRAPE_INTERVAL == "15s"
    assert LocalStack(Path("/nonexistent")).scrape_interval == DEFAULT_SCRAPE_INTERVAL
    assert datasource("1s")["datasources"][0]["jsonData"]["timeInterval"] == "1s"
    assert datasource("1s")["datasources"][0]["uid"] == committed["datasources"][0]["uid"]


def test_prometheus_and_alertmanager_get_the_printed_address_as_external_url(tmp_path):
    from gpu_carbon_exporter.stack import LocalStack

    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    stack = LocalStack(tmp_path, grafana=False, prometheus_port=0, alertmanager_port=0)
    stack.prepare()
    urls = stack.urls()
    assert f"--web.external-url={urls['prometheus']}" in stack.procs["prometheus"].argv
    assert f"--web.external-url={urls['alertmanager']}" in stack.procs["alertmanager"].argv
    config = __import__("yaml").safe_load((tmp_path / "prometheus.yml").read_text())
    assert config["global"] == {"scrape_interval": "15s", "evaluation_interval": "15s"}


def test_an_empty_budgets_list_is_allowed(tmp_path):
    """No budget rules, the others as generated; settings beside the empty list still apply; a file too."""
    import pytest

    from gpu_carbon_exporter.stack import LocalStack, StackError

    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    stack = LocalStack(tmp_path / "a", budgets={"budgets": []}, grafana=False, prometheus_port=0, alertmanager_port=0)
    stack.prepare()
    assert sorted(p.name for p in (tmp_path / "a" / "rules").iterdir()) == \
        ["gpu-carbon-alerts.yml", "gpu-carbon-recording.yml"]
    file = tmp_path / "budgets.yml"
    file.write_text("settings: {rate_window: 2m}\nbudgets: []\n")
    LocalStack(tmp_path / "b", budgets=file, grafana=False, prometheus_port=0, alertmanager_port=0).prepare()
    recording = (tmp_path / "b" / "rules" / "gpu-carbon-recording.yml").read_text()
    assert "rate(gpu_carbon_gpu_energy_joules_total[2m])" in recording  # the settings applied
    assert not (tmp_path / "b" / "rules" / "gpu-carbon-budgets.yml").exists()
    promtool = require_binary("promtool")
    for d in ("a", "b"):
        paths = sorted(str(p) for p in (tmp_path / d / "rules").iterdir())
        check = subprocess.run([promtool, "check", "rules", *paths], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("budgets: []\nsettings: {rate_window: soon}\n")
    with pytest.raises(StackError, match=rf"{bad}: settings.rate_window: expected a duration"):
        LocalStack(tmp_path / "c", budgets=bad, grafana=False, prometheus_port=0, alertmanager_port=0).prepare()


def test_alert_for_shortens_every_alert_in_the_stacks_copy_only(tmp_path):
    import yaml

    from gpu_carbon_exporter.stack import LocalStack

    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    LocalStack(tmp_path, grafana=False, prometheus_port=0, alertmanager_port=0, alert_for="1s").prepare()
    rules = [r for p in (tmp_path / "rules").iterdir() for g in yaml.safe_load(p.read_text())["groups"]
             for r in g["rules"] if "alert" in r]
    assert rules and all(r["for"] == "1s" for r in rules)
    committed = yaml.safe_load((Path(__file__).parents[1] / "prometheus/rules/gpu-carbon-alerts.yml").read_text())
    down = next(r for g in committed["groups"] for r in g["rules"] if r.get("alert") == "GpuCarbonExporterDown")
    assert down["for"] != "1s"


def test_bad_durations_are_refused_naming_the_option():
    for args, fragment in ((["--scrape-interval", "0s"], "--scrape-interval: expected a duration above zero"),
                           (["--scrape-interval", "15"], "--scrape-interval: expected a Prometheus duration"),
                           (["--alert-for", "soon"], "--alert-for: expected a Prometheus duration")):
        out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "stack", *args], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2 and fragment in out.stderr, out.stderr

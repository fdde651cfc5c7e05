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


def test_stack_starts_answers_and_stops_everything_on_ctrl_c(tmp_path):
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    proc = subprocess.Popen([sys.executable, "-m", "gpu_carbon_exporter", "stack", "--dir", str(tmp_path),
                             "--exporter-port", "0", "--prometheus-port", "0", "--alertmanager-port", "0",
                             "--grafana-port", "0", "--scrape-interval", "1s"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest = proc.communicate(timeout=60)[0]
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

"""kill -9 at random moments, over and over: no exposed counter ever goes down across restarts.
Also SIGHUP: the exporter reloads its web config and keeps running and counting."""
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time

import requests

from conftest import free_port
from procs import wait_http

SAMPLE = re.compile(r"^(gpu_carbon_\w+_total)(\{[^}]*\})? (\S+)$", re.M)


def start(tmp, port, *extra):
    log = open(tmp / "exporter.log", "a")
    return subprocess.Popen([sys.executable, "-m", "gpu_carbon_exporter", "--simulate", "jobs-mix",
                             "--sampling.interval", "0.1", "--state.path", str(tmp / "state.json"),
                             "--web.listen-address", f"127.0.0.1:{port}", *extra],
                            stdout=log, stderr=subprocess.STDOUT)


def counters(port) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {name + (labels or ""): float(value) for name, labels, value in SAMPLE.findall(text)
            if not name.startswith(("gpu_carbon_intensity_provider_", "gpu_carbon_scrape_errors"))}


def test_kill_9_at_random_moments_never_makes_a_counter_go_down(tmp_path):
    rng = random.Random(int(os.environ.get("CRASH_SEED", "42")))
    port = free_port()
    exposed: dict[str, float] = {}
    drops = []
    for run in range(8):
        proc = start(tmp_path, port)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
            deadline = time.monotonic() + rng.uniform(0.2, 2.5)
            while time.monotonic() < deadline:
                for key, value in counters(port).items():
                    if value < exposed.get(key, 0.0):
                        drops.append((run, key, exposed[key], value))
                    exposed[key] = max(value, exposed.get(key, 0.0))
                time.sleep(rng.uniform(0.0, 0.15))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    assert not drops, drops[:5]
    assert sum(k.startswith("gpu_carbon_job_energy_joules_total") for k in exposed) >= 2
    assert len(exposed) > 30


def test_sighup_reloads_and_keeps_counting(tmp_path):
    port = free_port()
    web = tmp_path / "web.yml"
    web.write_text("http_server_config:\n  headers:\n    X-Test: one\n")
    proc = start(tmp_path, port, "--web.config.file", str(web))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        before = counters(port)
        web.write_text("http_server_config:\n  headers:\n    X-Test: two\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            if r.headers.get("X-Test") == "two":
                break
            time.sleep(0.1)
        assert r.headers.get("X-Test") == "two" and proc.poll() is None
        key = next(k for k in before if k.startswith("gpu_carbon_gpu_energy_joules_total"))
        deadline = time.monotonic() + 30
        while counters(port)[key] <= before[key]:  # still sampling after the reload
            assert time.monotonic() < deadline, "the counters stopped after SIGHUP"
            time.sleep(0.1)
        web.write_text("http_server_config: [1]\n")  # a broken reload keeps the running config
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "web config reload failed" not in (tmp_path / "exporter.log").read_text():
            assert time.monotonic() < deadline, "the broken reload was never logged"
            time.sleep(0.1)
        assert proc.poll() is None
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).headers.get("X-Test") == "two"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    log = (tmp_path / "exporter.log").read_text()
    assert "reloaded the web config" in log and "web config reload failed" in log


def test_a_restarted_demo_recovers_its_downtime_like_a_real_driver(tmp_path):
    """The demo's simulated counters count from a fixed epoch: no 'driver reload' after a restart,
    and the downtime is recovered. A SIGKILLed run's temporary /proc and sysfs trees are removed
    at the next start."""
    import tempfile
    from pathlib import Path

    port = free_port()
    args = ["--simulate", "demo", "--state.path", str(tmp_path / "state.json"),
            "--web.listen-address", f"127.0.0.1:{port}"]
    def trees_of(pid: int) -> set[Path]:  # only this run's trees: other tests share /tmp
        return {d for d in Path(tempfile.gettempdir()).glob("gpu-carbon-*-*")
                if (d / ".owner-pid").exists() and (d / ".owner-pid").read_text().strip() == str(pid)}

    log = open(tmp_path / "exporter.log", "a")
    proc = subprocess.Popen([sys.executable, "-m", "gpu_carbon_exporter", *args], stdout=log, stderr=log)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    first = counters(port)
    left = trees_of(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert left and all(d.exists() for d in left)  # a killed run cannot clean up after itself
    time.sleep(1.0)
    proc = subprocess.Popen([sys.executable, "-m", "gpu_carbon_exporter", *args], stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        second = counters(port)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    text = (tmp_path / "exporter.log").read_text()
    assert "driver reload" not in text and "used while the exporter was down" in text
    assert not any(d.exists() for d in left)
    key = next(k for k in first if k.startswith("gpu_carbon_gpu_energy_joules_total{gpu=\"7\""))
    assert second[key] - first[key] >= 68 * 1.0  # GPU 7 idles at 68 W: at least 1 s of downtime recovered


def test_a_stop_signal_persists_the_counters_and_ends_at_once(tmp_path):
    """SIGTERM ends the server loop at once (the handler raises in the main thread; the loop no longer
    polls for a shutdown) and the counters are persisted durably (state.json is written at the stop,
    not before): the next run starts from at least what this one exposed. A second signal while
    persisting does not cut it short (that would end in a traceback, exit status 1); one that lands
    after, while the interpreter finalises (Python restores the default action then), ends it with
    SIGTERM's status, the counters already saved."""
    port = free_port()
    proc = start(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        exposed = counters(port)
        assert not (tmp_path / "state.json").exists()
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "exporter.log").read_text()
    assert log.count("persisting counters and exiting") == 1 and "Traceback" not in log
    assert (tmp_path / "state.json").exists()
    proc = start(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        again = counters(port)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert exposed and all(again.get(k, 0.0) >= v for k, v in exposed.items()), \
        [k for k, v in exposed.items() if again.get(k, 0.0) < v]


def test_a_stop_signal_while_a_connection_is_accepted_still_stops_and_persists(tmp_path):
    """The main thread also accepts connections; a stop signal landing there (here: sent from inside
    the server's process_request) must still end the loop and persist the counters. It once raised an
    Exception, which socketserver's accept path swallowed: every later signal was then ignored."""
    wrapper = tmp_path / "wrap.py"
    wrapper.write_text(
        "import os, signal, sys\n"
        "from gpu_carbon_exporter.web import server\n"
        "accept = server.ExporterServer.process_request\n"
        "def process_request(self, request, address):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # lands while the main thread accepts this connection\n"
        "    return accept(self, request, address)\n"
        "server.ExporterServer.process_request = process_request\n"
        "from gpu_carbon_exporter.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    port = free_port()
    log = open(tmp_path / "exporter.log", "w")
    proc = subprocess.Popen([sys.executable, str(wrapper), "--simulate", "jobs-mix", "--sampling.interval", "0.1",
                             "--state.path", str(tmp_path / "state.json"), "--web.listen-address", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        with contextlib.suppress(requests.RequestException):  # the connection that carries the signal
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        wait_for = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < wait_for and "listening on" not in \
                (tmp_path / "exporter.log").read_text():
            time.sleep(0.1)
        while proc.poll() is None and time.monotonic() < wait_for:
            with contextlib.suppress(requests.RequestException):
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            time.sleep(0.2)
        assert proc.poll() == 0, (tmp_path / "exporter.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "state.json").exists()
    assert "persisting counters and exiting" in (tmp_path / "exporter.log").read_text()

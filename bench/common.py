"""Shared helpers for the benchmarks: the simulated NVML library, processes, Prometheus.

Port, HTTP-readiness and query helpers are the tests' own (tests/conftest.py, tests/procs.py).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "nvml_sim"), str(ROOT / "tests")]
from build import build  # noqa: E402
from conftest import free_port  # noqa: E402
from procs import query, wait_for_series, wait_http  # noqa: E402

__all__ = ["PROMETHEUS_HEADERS", "build", "free_port", "nvitop_cmd", "ours_cmd", "process", "prometheus",
           "query", "scrape_session", "sim_env", "wait_for", "wait_http"]

# What Prometheus 3.x sends on every scrape (scrape.go: acceptHeader for the default
# scrape_protocols, and Accept-Encoding: gzip): the benches scrape exactly like it.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
              "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
              "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/3.0.0",
}


def scrape_session():
    """A requests session that asks for what Prometheus asks for."""
    import requests

    session = requests.Session()
    session.headers.update(PROMETHEUS_HEADERS)
    return session


def sim_env(trace: Path, counts: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "LD_LIBRARY_PATH": str(build()), "NVML_SIM_TRACE": str(trace)}
    if counts is not None:
        env["NVML_SIM_COUNTS"] = str(counts)
    return env


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path, ready_url: str | None) -> Iterator[subprocess.Popen]:
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            if ready_url:
                wait_http(ready_url, timeout=60.0, proc=proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def ours_cmd(port: int, config: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "gpu_carbon_exporter", "--web.listen-address", f"127.0.0.1:{port}"]
    return cmd + (["--config", str(config)] if config else [])


def nvitop_cmd(port: int) -> list[str]:
    exe = shutil.which("nvitop-exporter")
    if exe is None:
        raise SystemExit("nvitop-exporter is not installed: pip install -r bench/requirements.txt")
    return [exe, "--bind-address", "127.0.0.1", "--port", str(port), "--interval", "1.0"]


@contextlib.contextmanager
def prometheus(tmp: Path, jobs: dict[str, tuple[str, str]]) -> Iterator[str]:
    """jobs: name -> (target, scrape_interval)."""
    binary = shutil.which("prometheus") or sys.exit("prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    cfg = ["global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"]
    for name, (target, interval) in jobs.items():
        cfg.append(f"  - job_name: {name}\n    scrape_interval: {interval}\n    scrape_timeout: 1s\n"
                   f"    static_configs:\n      - targets: ['{target}']\n")
    (tmp / "prometheus.yml").write_text("".join(cfg))
    cmd = [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}"]
    with process(cmd, dict(os.environ), tmp / "prometheus.log", f"http://127.0.0.1:{port}/-/ready"):
        yield f"http://127.0.0.1:{port}"


def wait_for(base: str, promql: str, timeout: float = 90.0) -> float:
    """Time at which ``promql`` first returned data."""
    return wait_for_series(base, promql, timeout)

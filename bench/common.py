"""Shared helpers for the benchmarks: the simulated NVML library, processes, Prometheus."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "nvml_sim"))
from build import build  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sim_env(trace: Path, counts: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "LD_LIBRARY_PATH": str(build()), "NVML_SIM_TRACE": str(trace)}
    if counts is not None:
        env["NVML_SIM_COUNTS"] = str(counts)
    return env


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path, ready_url: str | None) -> Iterator[subprocess.Popen]:
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            if ready_url:
                wait_http(ready_url)
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


def query(base: str, promql: str, at: float | None = None) -> list[dict]:
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    body = requests.get(f"{base}/api/v1/query", params=params, timeout=30).json()
    if body["status"] != "success":
        raise RuntimeError(body)
    return body["data"]["result"]


def wait_for(base: str, promql: str, timeout: float = 90.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(base, promql):
            return time.time()
        time.sleep(0.5)
    raise TimeoutError(promql)

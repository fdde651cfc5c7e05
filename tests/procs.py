"""Real processes for end-to-end tests: the exporter and a Prometheus scraping it."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

import requests

from conftest import free_port, require_binary


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def exporter(tmp: Path, *args: str) -> Iterator[int]:
    port = free_port()
    log = open(tmp / "exporter.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gpu_carbon_exporter", "--web.listen-address",
                             f"127.0.0.1:{port}", *args], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@contextlib.contextmanager
def prometheus(tmp: Path, targets: list[str], rule_files: list[Path] = (), interval: str = "1s") -> Iterator[str]:
    binary = require_binary("prometheus")
    port = free_port()
    config = tmp / "prometheus.yml"
    rules = "".join(f"\n  - {p}" for p in rule_files)
    config.write_text(
        f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
        + (f"rule_files:{rules}\n" if rule_files else "")
        + "scrape_configs:\n  - job_name: gpu\n    static_configs:\n"
        + f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
    log = open(tmp / "prometheus.log", "w")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/-/ready", proc=proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def wait_for_series(base: str, promql: str, timeout: float = 30.0) -> float:
    """Wait until ``promql`` returns data; returns the time it first did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(base, promql):
            return time.time()
        time.sleep(0.2)
    raise TimeoutError(f"no data for {promql} within {timeout}s")


def wait_until(check, timeout: float, what: str):
    """``check()``'s first truthy value, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def last_evaluations(base: str, recording_only: bool = False) -> dict[str, float]:
    """When each rule group of the Prometheus at ``base`` last began an evaluation (Unix seconds, from
    its rules API); ``recording_only``: only the groups that hold a recording rule."""
    groups = requests.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
    return {g["name"]: datetime.fromisoformat(g["lastEvaluation"][:26].rstrip("Z") + "+00:00").timestamp()
            for g in groups if not recording_only or any(r["type"] == "recording" for r in g["rules"])}


def settled(base: str, after: float, timeout: float = 60.0) -> float:
    """Wait until Prometheus at ``base`` has scraped every target after ``after`` (Unix seconds) and then
    begun an evaluation of every group of recording rules; returns the time it had. Reading a panel at that
    time sees everything the exporters counted up to ``after``, however late a loaded machine ran them."""
    def scraped() -> bool:
        stamps = query(base, "timestamp(up)")
        return bool(stamps) and min(float(r["value"][1]) for r in stamps) >= after

    def evaluated() -> bool:
        return all(t > since for t in last_evaluations(base, recording_only=True).values())

    wait_until(scraped, timeout, f"a scrape of every target after {after:.1f}")
    since = time.time()
    wait_until(evaluated, timeout, "an evaluation of every recording group after that scrape")
    return time.time()


def query(base: str, promql: str, at: float | None = None) -> list[dict]:
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    r = requests.get(f"{base}/api/v1/query", params=params, timeout=10)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]

"""Shared test helpers: a manual clock, simulated GPUs, real binaries and free ports."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from gpu_carbon_exporter.sim.nvml import SimulatedNvml
from gpu_carbon_exporter.sim.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent


class ManualClock:
    """Unix-like time that only moves when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.start = start
        self._us = 0  # whole microseconds, so many small steps add up exactly

    def __call__(self) -> float:
        return self.start + self._us / 1e6

    def advance(self, seconds: float) -> None:
        self._us += round(seconds * 1e6)

    @property
    def sim(self) -> float:
        """Scenario time: seconds since the clock started."""
        return self._us / 1e6


def sim_nvml(data: dict, clock: ManualClock) -> SimulatedNvml:
    return SimulatedNvml(parse_scenario(data, "<test>"), lambda: clock.sim)


def require_binary(name: str) -> str:
    """Path of a real binary; missing fails under CI=true and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install -y prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


# The files that wait longest on real time (scrapes, rule evaluations, outages), longest first: the
# workers (pytest-xdist, a file each at a time) start them before the quick ones, so the suite ends
# soon after its longest file instead of a long file starting last (longest-processing-time first).
SLOW_FILES = ("test_promtool_cases.py", "test_e2e_rules.py", "test_rules.py", "test_stack.py", "test_now_rules.py",
              "test_budget_lag.py",
              "test_dashboards.py", "test_victoriametrics.py", "test_report.py", "test_backfill.py",
              "test_e2e_prometheus.py", "test_crash_loop.py", "test_deploy_systemd.py", "test_e2e_jobs.py",
              "test_attacks.py", "test_hardening.py")


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))

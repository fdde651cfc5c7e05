"""The committed promtool unit tests (prometheus/tests/*_test.yml) run by the real promtool: alerts,
budgets and recording rules. A file of their own so the test workers start them beside the other long
files (the slow budget cases evaluate every group for up to 13.5 h of 1-minute steps, the slow
burn-rate tiers 25 h of 5-minute steps: tests/budget_cases.py)."""
import subprocess
from pathlib import Path

import pytest

from conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL_TESTS = ROOT / "prometheus" / "tests"
FILES = sorted(p.name for p in PROMTOOL_TESTS.glob("*_test.yml"))


def test_there_are_promtool_cases():
    assert {"alerts_test.yml", "budgets_test.yml", "budget_tiers_test.yml", "recording_test.yml"} <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_promtool_unit_tests_the_committed_files(name):
    promtool = require_binary("promtool")
    run = subprocess.run([promtool, "test", "rules", str(PROMTOOL_TESTS / name)], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr

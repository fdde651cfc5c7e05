"""The "now" rates (…:sum_irate) through a real Prometheus with the generated rules, at the
production scrape interval (15 s): a node stepping from idle to 2 kW reads within 2 % of 2 kW at
the first evaluation after the second scrape that follows the step, from the energy and emission
counters. The 5-minute average (…:sum_rate5m, kept for smooth curves) still reads far below then."""
from __future__ import annotations

import time

import pytest
import yaml

from gpu_carbon_exporter.mixin import write as write_rules

from procs import exporter, prometheus, query, wait_until

pytestmark = pytest.mark.e2e
H100 = "NVIDIA H100 80GB HBM3"
STEP_AT = 30.0  # scenario seconds: the exporter and Prometheus are up and have scraped the idle node by then
IDLE_W, BUSY_W, GPUS = 25.0, 500.0, 4  # 100 W -> 2 kW for the node
PUE, G_PER_KWH = 1.2, 300.0
SCRAPE = 15.0


def samples(base: str, promql: str, at: float) -> list[tuple[float, float]]:
    """The raw (timestamp, value) samples of a single-series range selector."""
    rows = query(base, promql, at)
    return [(float(t), float(v)) for t, v in rows[0]["values"]] if rows else []


def test_now_rates_follow_a_step_within_two_scrapes(tmp_path):
    start = time.time()
    scenario = {"name": "step", "start_time": start, "zone": "Z", "pue": PUE, "intensity": {"Z": [[0, G_PER_KWH]]},
                "devices": [{"model": H100, "power": {"pattern": "steps", "steps": [[0, IDLE_W], [STEP_AT, BUSY_W]]}}
                            for _ in range(GPUS)]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scenario))
    rules = write_rules(tmp_path / "rules")
    step = start + STEP_AT
    with exporter(tmp_path, "--simulate", str(tmp_path / "s.yaml"), "--sampling.interval", "0.1") as port, \
            prometheus(tmp_path, [f"127.0.0.1:{port}"], rules, interval=f"{SCRAPE:g}s") as base:
        first = wait_until(lambda: samples(base, "up[2m]", time.time()), STEP_AT + 30, "a first scrape")[0][0]
        assert first < step, "Prometheus first scraped after the step: no step to follow (a very slow start)"

        def two_scrapes_after_step():
            after = [t for t, _ in samples(base, "up[2m]", time.time()) if t > step]
            return after[:2] if len(after) >= 2 else None

        _, second = wait_until(two_scrapes_after_step, 4 * SCRAPE + 30, "two scrapes after the step")

        def first_evaluation_after(record: str):
            later = [(t, v) for t, v in samples(base, f"{record}[2m]", time.time()) if t >= second]
            return later[0] if later else None

        now_w = wait_until(lambda: first_evaluation_after("node:gpu_carbon_power_watts:sum_irate"),
                           2 * SCRAPE + 30, "an evaluation of the now rule after the second scrape")
        now_g = wait_until(lambda: first_evaluation_after("node:gpu_carbon_emission_rate_grams_per_second:sum_irate"),
                           2 * SCRAPE + 30, "an evaluation of the now emission rule")
        avg_w = wait_until(lambda: first_evaluation_after("node:gpu_carbon_power_watts:sum_rate5m"),
                           2 * SCRAPE + 30, "an evaluation of the 5-minute rule")
    watts, grams = GPUS * BUSY_W, GPUS * BUSY_W * PUE * G_PER_KWH / 3.6e6
    print(f"{now_w[0] - step:.1f} s after the step: now {now_w[1]:.1f} W ({100 * (now_w[1] / watts - 1):+.2f} %), "
          f"{now_g[1]:.6f} g/s ({100 * (now_g[1] / grams - 1):+.2f} %); 5-minute average {avg_w[1]:.1f} W")
    assert now_w[1] == pytest.approx(watts, rel=0.02)
    assert now_g[1] == pytest.approx(grams, rel=0.02)
    assert avg_w[1] < 0.5 * watts  # the smooth average has not caught up: that is why "now" reads irate

"""End to end: the exporter under --simulate, scraped every 1 s by a real Prometheus.

Prometheus's increase() of the energy counter must match the scenario's exact
ground truth within 1 %, and the emission counter must follow a stepped
intensity within 1 %.
"""
import time

import pytest
import yaml

from gpu_carbon_exporter.sim.scenario import GroundTruth, parse_scenario

from procs import exporter, prometheus, query, wait_for_series

pytestmark = pytest.mark.e2e
WINDOW_S = 20


def scenario(start: float) -> dict:
    return {
        "name": "e2e", "start_time": start, "zone": "Z", "pue": 1.3,
        "intensity": {"Z": [[0, 250], [12, 420]]},
        "devices": [
            {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 310}},
            {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "square", "period_s": 0.01, "duty": 0.3,
                                                         "high_w": 690, "low_w": 120}},
            {"model": "NVIDIA A100-SXM4-80GB", "power": {"pattern": "square", "period_s": 0.1, "duty": 0.5,
                                                         "high_w": 400, "low_w": 100}},
            {"model": "Tesla P100-PCIE-16GB", "power": {"pattern": "constant", "watts": 150}},
        ],
    }


def test_prometheus_increase_matches_ground_truth(tmp_path):
    start = time.time()
    data = scenario(start)
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(data))
    truth = GroundTruth(parse_scenario(data))
    with exporter(tmp_path, "--simulate", str(tmp_path / "scenario.yaml"), "--sampling.interval", "0.05") as port:
        with prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prom:
            first = wait_for_series(prom, "gpu_carbon_gpu_energy_joules_total")
            time.sleep(WINDOW_S + 2.5)  # the whole window lies after the first scrape
            at = time.time() - 0.5
            assert at - WINDOW_S > first
            results = query(prom, f"increase(gpu_carbon_gpu_energy_joules_total[{WINDOW_S}s])", at)
            series = query(prom, f"gpu_carbon_gpu_emissions_grams_total[{WINDOW_S + 2}s]", at)
            up = query(prom, "up", at)
    assert up and up[0]["value"][1] == "1"
    assert len(results) == 4
    for r in results:
        gpu = int(r["metric"]["gpu"])
        want = truth.device_energy_j(gpu, at - start - WINDOW_S, at - start)
        got = float(r["value"][1])
        print(f"energy gpu{gpu} {r['metric']['method']}: increase={got:.1f} J truth={want:.1f} J "
              f"error={100 * (got - want) / want:+.3f} %")
        assert got == pytest.approx(want, rel=0.01), (r["metric"], got, want)
    assert {r["metric"]["method"] for r in results} == {"counter", "integrated"}
    for s in series:  # emissions across the intensity step at t=12 s, from raw samples
        gpu = int(s["metric"]["gpu"])
        (t0, v0), (t1, v1) = s["values"][0], s["values"][-1]
        want = truth.device_emissions_g(gpu, float(t0) - start, float(t1) - start)
        print(f"emissions gpu{gpu}: {float(v1) - float(v0):.4f} g truth={want:.4f} g "
              f"error={100 * (float(v1) - float(v0) - want) / want:+.3f} %")
        assert float(v1) - float(v0) == pytest.approx(want, rel=0.01), (s["metric"], v1, v0, want)

"""Power patterns: the closed-form energy must equal a fine numerical integral."""
import math

import pytest

from gpu_carbon_exporter.sim import patterns as P


def numeric_energy(pattern: P.Pattern, t0: float, t1: float, steps: int = 400_000) -> float:
    dt = (t1 - t0) / steps
    return sum(pattern.power(t0 + (i + 0.5) * dt) for i in range(steps)) * dt


@pytest.mark.parametrize("pattern", [
    P.Constant(123.0),
    P.PiecewiseConstant([0, 1.5, 4], [100, 300, 50]),
    P.PiecewiseLinear([0, 1, 3, 7], [100, 500, 200, 200]),
    P.Square(0.01, 0.3, 700, 80),
    P.Square(1.0, 0.9, 600, 100, phase_s=0.25),
    P.bursts(seed=3, low_w=100, high_w=500, mean_on_s=0.5, mean_off_s=1.0, horizon_s=4),
    P.Schedule([0, 2, 5], [P.Constant(70), P.Square(0.5, 0.5, 600, 200), P.Constant(80)]),
])
def test_closed_form_matches_numeric_integral(pattern):
    exact = pattern.energy(9.37) - pattern.energy(0.41)
    assert exact == pytest.approx(numeric_energy(pattern, 0.41, 9.37), rel=5e-4)  # midpoint rule error at 10-ms edges


def test_square_10ms_energy_is_exact_over_whole_and_partial_periods():
    sq = P.Square(0.010, 0.25, high_w=400, low_w=100)
    assert sq.energy(1.0) == pytest.approx(1.0 * (0.25 * 400 + 0.75 * 100), rel=1e-12)
    # 2.5 ms into a period: all of it at the high level
    assert sq.energy(1.0025) - sq.energy(1.0) == pytest.approx(0.0025 * 400, rel=1e-9)
    assert sq.power(1.001) == 400 and sq.power(1.006) == 100


def test_periodic_repeats_energy_per_period():
    inner = P.PiecewiseConstant([0, 10], [100, 300])
    per = P.Periodic(inner, 20)
    assert per.energy(20) == pytest.approx(100 * 10 + 300 * 10)
    assert per.energy(45) == pytest.approx(2 * 4000 + 100 * 5)
    assert per.power(25) == 100 and per.power(35) == 300


def test_bursts_are_deterministic_per_seed():
    a = P.bursts(1, 100, 500, 0.5, 1.0, 60)
    b = P.bursts(1, 100, 500, 0.5, 1.0, 60)
    c = P.bursts(2, 100, 500, 0.5, 1.0, 60)
    assert a.energy(55.5) == b.energy(55.5)
    assert a.energy(55.5) != c.energy(55.5)


def test_replay_csv_is_trapezoid_exact(tmp_path):
    f = tmp_path / "trace.csv"
    f.write_text("time,watts\n100,200\n101,400\n103,400\n")
    pattern = P.replay_csv(f, loop=False)
    assert pattern.energy(3) == pytest.approx(300 + 800)
    assert pattern.energy(5) == pytest.approx(300 + 800 + 800)  # last value holds
    looped = P.replay_csv(f, loop=True)
    assert looped.energy(6) == pytest.approx(2 * 1100)


def test_square_breakpoints_are_edges():
    sq = P.Square(1.0, 0.5, 1, 0)
    assert sq.breakpoints(0.2, 2.2) == [0.5, 1.0, 1.5, 2.0]
    assert all(math.isclose(sq.power(b - 1e-9), 1 - sq.power(b + 1e-9)) for b in sq.breakpoints(0.2, 2.2))

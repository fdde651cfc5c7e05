"""The file intensity provider: CSV and JSON series, exact segments, reloads, bad input."""
import os

import pytest

from gpu_carbon_exporter.carbon.file import FileIntensity, parse_series
from gpu_carbon_exporter.config import ConfigError, parse_config


def test_csv_with_iso_times_and_exact_segments(tmp_path):
    f = tmp_path / "i.csv"
    f.write_text("time,g_per_kwh\n2026-01-01T00:00:00Z,300\n2026-01-01T00:30:00Z,120\n")
    p = FileIntensity("Z", f)
    t0 = 1767225600.0  # 2026-01-01T00:00:00Z
    assert p.current(t0 + 10).g_per_kwh == 300 and p.current(t0 + 1800).g_per_kwh == 120
    segs = p.segments(t0 + 1790, t0 + 1810)
    assert [(a - t0, b - t0, i.g_per_kwh) for a, b, i in segs] == [(1790, 1800, 300), (1800, 1810, 120)]
    assert segs[0][2].source == "file"


def test_json_series_and_reload_on_change(tmp_path):
    f = tmp_path / "i.json"
    f.write_text('[{"time": 100, "g_per_kwh": 50}, {"time": 200, "g_per_kwh": 70}]')
    p = FileIntensity("Z", f)
    assert p.current(250).g_per_kwh == 70
    f.write_text('[{"time": 100, "g_per_kwh": 50}, {"time": 200, "g_per_kwh": 90}]')
    os.utime(f, (1e9, 1e9))
    assert p.current(250).g_per_kwh == 90 and p.healthy()
    f.write_text("not, a, series\nx,y\n")
    os.utime(f, (2e9, 2e9))
    assert p.current(250).g_per_kwh == 90  # last good series kept
    assert not p.healthy()


@pytest.mark.parametrize("text, fragment", [
    ("0,100\n10,-5\n", "entry 1: -5.0 gCO2e/kWh is outside"),
    ("0,100\n10,3000\n", "outside [0, 2500]"),
    ("0,100\nyesterday,5\n", "entry 1"),
    ("", "no data"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # was a RecursionError out of current()
    ('[{"time": 0, "g_per_kwh": 100}, [1, 2]]', "entry 1: expected an object"),  # was an AttributeError
])
def test_bad_series(text, fragment):
    with pytest.raises(ValueError, match="s.csv"):
        parse_series(text, "s.csv")
    with pytest.raises(ValueError) as err:
        parse_series(text, "s.csv")
    assert fragment in str(err.value)


def test_config_requires_a_path():
    with pytest.raises(ConfigError, match="carbon.zones.x.path: required"):
        parse_config({"carbon": {"zones": {"x": {"provider": "file"}}}})

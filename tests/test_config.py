"""Configuration: defaults, errors that name file, key and reason, CLI overrides."""
import subprocess
import sys

import pytest

from gpu_carbon_exporter.cli import main
from gpu_carbon_exporter.config import ConfigError, load_config, parse_config


def test_defaults():
    cfg = parse_config({})
    assert cfg["web"]["listen_address"] == ":9842"
    assert cfg["sampling"]["interval_seconds"] == 1.0 and cfg["sampling"]["integration_hz"] == 10.0
    assert cfg["carbon"]["zone"] is None and cfg["state"]["path"] is None


def test_country_zone_and_static_zone():
    cfg = parse_config({"carbon": {"zone": "lab", "zones": {"lab": {"provider": "static", "g_per_kwh": 42},
                                                             "fr": {"provider": "country", "country": "fra"}}}})
    assert cfg["carbon"]["zones"]["fr"]["country"] == "FRA"
    assert parse_config({"carbon": {"zone": "DEU"}})["carbon"]["zone"] == "DEU"


@pytest.mark.parametrize("text, key, reason", [
    ("web:\n  listen_adress: ':1'\n", "web.listen_adress", "unknown key"),
    ("sampling:\n  interval_seconds: fast\n", "sampling.interval_seconds", "expected a number"),
    ("sampling:\n  integration_hz: 2\n", "sampling.integration_hz", "must be in [10, 1000]"),
    ("carbon:\n  pue: 0.9\n", "carbon.pue", "must be in [1, 10]"),
    ("carbon:\n  zone: Atlantis\n", "carbon.zone", "or define it under carbon.zones"),
    ("carbon:\n  zones:\n    x: {provider: static}\n", "carbon.zones.x.g_per_kwh", "required for provider static"),
    ("carbon:\n  zones:\n    x: {provider: static, g_per_kwh: 9000}\n", "carbon.zones.x.g_per_kwh", "(0, 2500]"),
    ("carbon:\n  zones:\n    x: {provider: country, country: XXX}\n", "carbon.zones.x.country", "not an ISO 3166"),
    ("carbon:\n  zones:\n    x: {provider: magic}\n", "carbon.zones.x.provider", "must be one of"),
    ("log:\n  level: loud\n", "log.level", "must be one of"),
    ("web: [1, 2]\n", "web", "expected a mapping"),
    ("web: {\n", "", "invalid YAML"),
    ("state:\n  path: ''\n", "state.path", "must not be empty"),
    *[(f"carbon:\n  zones:\n    x: {{provider: ukcarbonintensity, base_url: '{url}'}}\n", "carbon.zones.x.base_url",
       reason) for url, reason in [("ftp://api.example", "must be an http:// or https:// URL"),
                                   ("api.example.org", "must be an http:// or https:// URL"),
                                   ("https://", "must name a host"), ("https://:443/v3", "must name a host"),
                                   ("https://api.example:70000", "port must be a number in [1, 65535]"),
                                   ("https://api.example:0", "port must be a number in [1, 65535]")]],
])
def test_errors_name_file_key_and_reason(tmp_path, text, key, reason):
    f = tmp_path / "exporter.yml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: ") and key in msg and reason in msg


def test_check_config_exit_codes(tmp_path, capsys):
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text("carbon:\n  zone: FRA\n  pue: 1.3\n")
    bad.write_text("carbon:\n  pue: -1\n")
    assert main(["check-config", str(good)]) == 0
    assert main(["check-config", str(bad)]) == 2
    assert f"{bad}: carbon.pue: must be in [1, 10]" in capsys.readouterr().err


def test_bad_config_exits_nonzero_from_the_console_script(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("nope: 1\n")
    out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "--config", str(bad), "--simulate", "--once"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"{bad}: nope: unknown key" in out.stderr


def test_flags_override_the_file(tmp_path, capsys):
    f = tmp_path / "c.yml"
    f.write_text("carbon:\n  zone: FRA\n")
    assert main(["--config", str(f), "--carbon.zone", "POL", "--simulate", "--once"]) == 0
    out = capsys.readouterr().out
    assert 'zone="POL"' in out and 'source="country_table"' in out
    assert main(["--carbon.zone", "Atlantis", "--simulate", "--once"]) == 2


def test_shipped_example_configs_are_valid():
    """deploy/config/ must pass the same checks an operator's copy will."""
    from pathlib import Path

    from gpu_carbon_exporter.web import load_web_config

    root = Path(__file__).resolve().parent.parent / "deploy" / "config"
    cfg = load_config(root / "gpu-carbon-exporter.yml")
    assert cfg["carbon"]["zone"] == "DEU" and cfg["state"]["path"]
    with pytest.raises(ConfigError, match="tls_server_config.cert_file: cannot load"):  # paths exist on a node only
        load_web_config(root / "web-config.yml")
    # no working credential ships: no bcrypt hash anywhere in the example
    import re

    assert not re.search(r"\$2[aby]\$", (root / "web-config.yml").read_text())


def test_the_configuration_is_typed_with_the_documented_key_names():
    import dataclasses

    cfg = parse_config({"sampling": {"interval_seconds": 2}, "carbon": {"zone": "x", "zones": {
        "x": {"provider": "static", "g_per_kwh": 100}}}})
    assert cfg.sampling.interval_seconds == 2.0 and cfg["sampling"]["interval_seconds"] == 2.0
    assert cfg.carbon.zones["x"].g_per_kwh == 100.0 and cfg.sources.rapl.sysfs_root == "/"
    assert dataclasses.is_dataclass(cfg) and dataclasses.is_dataclass(cfg.attribution.teams)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sampling.interval_seconds = 5  # validated once, never changed behind the validator's back
    # the sampling section is exactly the meter's keyword arguments: no renaming on the way
    import inspect

    from gpu_carbon_exporter.meter import Meter

    assert set(cfg.sampling.keys()) <= set(inspect.signature(Meter).parameters)


DUPLICATE = "carbon:\n  zone: FRA\n  pue: 1.2\n  zone: DEU\n"  # the second zone would silently win


@pytest.mark.parametrize("kind", ["config", "web config", "scenario", "budgets"])
def test_duplicate_keys_are_refused_naming_file_key_and_both_lines(tmp_path, capsys, kind):
    """Every YAML file goes through config.read_yaml, which refuses a key given twice in a mapping."""
    from gpu_carbon_exporter.mixin.budgets import BudgetError, load_budgets
    from gpu_carbon_exporter.sim.scenario import ScenarioError, load_scenario
    from gpu_carbon_exporter.web import load_web_config

    f = tmp_path / "file.yml"
    text, load, error = {
        "config": (DUPLICATE, load_config, ConfigError),
        "web config": ("basic_auth_users: {}\nhttp_server_config:\n  http2: true\n  http2: false\n",
                       load_web_config, ConfigError),
        "scenario": ("devices:\n  - model: NVIDIA H100 80GB HBM3\n    power: {pattern: constant, watts: 300,"
                     " watts: 700}\n", load_scenario, ScenarioError),
        "budgets": ("budgets:\n  - name: a\n    name: b\n", load_budgets, BudgetError),
    }[kind]
    f.write_text(text)
    with pytest.raises(error) as err:
        load(f)
    first, second = {"config": (2, 4), "web config": (3, 4), "scenario": (3, 3), "budgets": (2, 3)}[kind]
    key = {"config": "zone", "web config": "http2", "scenario": "watts", "budgets": "name"}[kind]
    assert str(err.value) == (f"{f}: {key}: duplicate key at line {second} (first at line {first}); "
                              "remove one of them")


def test_merge_keys_may_still_override_and_the_cli_reports_duplicates(tmp_path, capsys):
    f = tmp_path / "c.yml"
    f.write_text("carbon:\n  zones:\n    base: &b {provider: static, g_per_kwh: 100}\n"
                 "    lab: {<<: *b, g_per_kwh: 50}\n  zone: lab\n")
    assert load_config(f).carbon.zones["lab"].g_per_kwh == 50.0  # overriding a merged key is no duplicate
    f.write_text(DUPLICATE)
    assert main(["check-config", str(f)]) == 2
    assert f"{f}: zone: duplicate key at line 4 (first at line 2)" in capsys.readouterr().err

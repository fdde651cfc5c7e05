"""Errors that name the culprit: the file, the key, the value and what to do."""
import socket
import subprocess
import sys

import pytest

from gpu_carbon_exporter.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", *args], capture_output=True, text=True,
                          timeout=60)


def test_port_in_use_names_the_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run("--simulate", "--web.listen-address", f"127.0.0.1:{port}")
    assert out.returncode == 2
    assert f"web.listen_address: cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_port_out_of_range(capsys):
    assert main(["--simulate", "--once", "--web.listen-address", "0.0.0.0:99999"]) == 2
    assert "web.listen_address: port 99999 is out of range (0-65535)" in capsys.readouterr().err


def test_tls_certificate_not_found_names_key_and_path(tmp_path, capsys):
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    assert main(["--simulate", "--web.config.file", str(web)]) == 2
    err = capsys.readouterr().err
    assert f"{web}: tls_server_config.cert_file: cannot load certificate/key: {tmp_path / 'missing.crt'}" in err


def test_unknown_builtin_scenario_lists_the_names(capsys):
    assert main(["--simulate", "jobsmix", "--once"]) == 2
    assert "jobsmix: no such scenario file, and not a built-in scenario (demo, jobs-mix, edge-orin" in \
        capsys.readouterr().err
    assert "jobs-mix" in run("--help").stdout


def test_unknown_gpu_model_asks_for_its_power_range(tmp_path, capsys):
    s = tmp_path / "s.yaml"
    s.write_text("devices:\n  - model: Foo GPU\n    power: {pattern: constant, watts: 100}\n")
    assert main(["--simulate", str(s), "--once"]) == 2
    err = capsys.readouterr().err
    assert "devices[0].model: unknown model 'Foo GPU': give idle_w and max_w" in err
    assert err.count(str(s)) == 1  # no doubled prefixes


def test_a_scenario_above_max_power_warns(tmp_path, caplog):
    from gpu_carbon_exporter.sim.scenario import load_scenario

    s = tmp_path / "s.yaml"
    s.write_text("devices:\n  - model: NVIDIA H100 80GB HBM3\n    power: {pattern: constant, watts: 900}\n")
    load_scenario(s)
    assert "draws up to 900 W, above NVIDIA H100 80GB HBM3's max_w of 700 W" in caplog.text


def test_every_config_error_is_reported_at_once(tmp_path, capsys):
    f = tmp_path / "c.yml"
    f.write_text("web:\n  listen_address: ':99999'\n  max_connections: 0\nsampling:\n  interval_seconds: 0\n"
                 "carbon:\n  pue: 0.5\n")
    assert main(["check-config", str(f)]) == 2
    err = capsys.readouterr().err
    for key in ("web.listen_address", "web.max_connections", "sampling.interval_seconds", "carbon.pue"):
        assert f"{f}: {key}: " in err


@pytest.mark.parametrize("body, fragment", [
    ("web:\n  config_file: /nonexistent/web.yml\n", "web.config_file: /nonexistent/web.yml: cannot read"),
    ("carbon:\n  zone: x\n  zones:\n    x: {provider: electricitymaps, zone_id: DE, token_env: GCE_NO_SUCH_VAR}\n",
     "carbon.zones.x.token_env: environment variable GCE_NO_SUCH_VAR is not set"),
    ("carbon:\n  zone: x\n  zones:\n    x: {provider: watttime, region: CAISO_NORTH, username: u, "
     "password_file: /nonexistent/secret}\n", "carbon.zones.x.password_file: cannot read"),
    ("sources:\n  redfish: {url: 'https://bmc', password_file: /nonexistent/pw}\n",
     "sources.redfish.password_file: cannot read"),
])
def test_check_config_catches_what_start_up_would_refuse(tmp_path, capsys, body, fragment):
    f = tmp_path / "c.yml"
    f.write_text(body)
    assert main(["check-config", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f}: ") and fragment in err, err


def test_an_unwritable_state_path_is_caught_before_start(tmp_path, capsys):
    f = tmp_path / "c.yml"
    f.write_text("state:\n  path: /proc/1/no/state.json\n")
    assert main(["check-config", str(f)]) == 2
    assert "cannot write the state there" in capsys.readouterr().err
    assert main(["--simulate", "--once", "--state.path", "/proc/1/no/state.json"]) == 2


def test_scenario_intensity_values_are_checked(tmp_path, capsys):
    s = tmp_path / "s.yaml"
    s.write_text("zone: Z\nintensity: {Z: [[0, 300], [50, -50]]}\n"
                 "devices:\n  - model: NVIDIA H100 80GB HBM3\n    power: {pattern: constant, watts: 100}\n")
    assert main(["--simulate", str(s), "--once"]) == 2
    assert "intensity.Z" in capsys.readouterr().err

"""The console script as a user runs it."""
import subprocess
import sys

from gpu_carbon_exporter import __version__


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and __version__ in out.stdout


def test_once_with_builtin_demo_prints_eight_gpus():
    out = cli("--simulate", "--once")
    assert out.returncode == 0
    assert out.stdout.count("gpu_carbon_gpu_up{") == 8
    import re

    (value,) = re.findall(r'^gpu_carbon_grid_intensity_grams_per_kwh\{zone="DEU"\} (\S+)$', out.stdout, re.M)
    assert float(value) in (380, 310, 420, 360, 290, 400)  # the demo's 5-minute steps, in phase with the clock
    assert 'gpu_carbon_grid_intensity_source_info{signal="average",source="scenario",zone="DEU"} 1.0' in out.stdout
    assert "level=info" in out.stderr  # levelled logs go to stderr


def test_no_driver_gives_one_clear_message_and_nonzero_exit():
    out = cli("--once")  # this machine has no NVIDIA driver
    assert out.returncode == 3
    assert "--simulate" in out.stderr and "driver" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_scenario_is_a_clear_error(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("devices: []\n")
    out = cli("--simulate", str(f), "--once")
    assert out.returncode == 2 and f"{f}: devices: at least one device" in out.stderr


def test_once_integrates_before_printing():
    out = cli("--simulate", "--once", "--once.duration", "1")
    assert out.returncode == 0
    energy = [float(line.rsplit(" ", 1)[1]) for line in out.stdout.splitlines()
              if line.startswith("gpu_carbon_gpu_energy_joules_total{")]
    assert len(energy) == 8 and all(e > 0 for e in energy)  # 1 s of every GPU's energy, not 0 J


def test_once_with_an_unreachable_live_provider_falls_back_visibly(tmp_path):
    import os

    from conftest import free_port

    cfg = tmp_path / "c.yml"
    cfg.write_text("carbon:\n  zone: site\n  zones:\n    site:\n      provider: electricitymaps\n"
                   f"      zone_id: DE\n      token_env: GCE_TEST_TOKEN\n      base_url: http://127.0.0.1:{free_port()}\n"
                   "      fallback: {provider: country, country: DEU}\n")
    out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "--simulate", "--once", "--once.duration", "0",
                          "--config", str(cfg)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "GCE_TEST_TOKEN": "t"})
    assert out.returncode == 0
    assert 'gpu_carbon_grid_intensity_fallback{zone="site"} 1.0' in out.stdout
    assert "live intensity not fetched within 5 s: printing the fallback" in out.stderr

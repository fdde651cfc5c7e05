"""The systemd deployment: install.sh makes a virtual environment of its own (PEP 668 hosts refuse
`sudo pip install .`), installs the hardened unit pointing at it, which `systemd-analyze verify`
accepts with and without its drop-ins; the `systemd-analyze security` exposure of each variant is
the one docs/security.md records."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"
VARIANTS = {"base unit": [], "+ rapl.conf": ["rapl"], "+ attribution.conf": ["attribution"],
            "+ both": ["rapl", "attribution"]}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("install")
    env = {**os.environ, "PREFIX": str(root / "opt"), "UNIT_DIR": str(root / "units"),
           "CONFIG_DIR": str(root / "etc"), "DROPINS": "rapl attribution", "START": "no"}
    out = subprocess.run(["sh", str(SYSTEMD / "install.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def test_install_script_makes_its_own_environment_and_installs_the_unit(installed):
    """(No systemd runs here to start it: the unit is verified and scored below.)"""
    exe = installed / "opt" / "bin" / "gpu-carbon-exporter"
    assert subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout \
        .startswith("gpu-carbon-exporter")
    unit = (installed / "units" / "gpu-carbon-exporter.service").read_text()
    assert f"ExecStart={exe} --config {installed / 'etc'}/gpu-carbon-exporter.yml" in unit
    assert (installed / "etc" / "gpu-carbon-exporter.yml").read_text() == \
        (ROOT / "deploy" / "config" / "gpu-carbon-exporter.yml").read_text()
    assert sorted(p.name for p in (installed / "units" / "gpu-carbon-exporter.service.d").iterdir()) == \
        ["attribution.conf", "rapl.conf"]


def test_reinstalling_keeps_an_edited_config(installed):
    config = installed / "etc" / "gpu-carbon-exporter.yml"
    config.write_text(config.read_text().replace("pue: 1.3", "pue: 1.4"))
    env = {**os.environ, "PREFIX": str(installed / "opt"), "UNIT_DIR": str(installed / "units"),
           "CONFIG_DIR": str(installed / "etc"), "START": "no"}
    out = subprocess.run(["sh", str(SYSTEMD / "install.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "pue: 1.4" in config.read_text()


def test_a_broken_config_stops_the_install(installed, tmp_path):
    (tmp_path / "gpu-carbon-exporter.yml").write_text("sampling: {interval_seconds: -1}\n")
    env = {**os.environ, "PREFIX": str(installed / "opt"), "UNIT_DIR": str(tmp_path / "units"),
           "CONFIG_DIR": str(tmp_path), "START": "no"}
    out = subprocess.run(["sh", str(SYSTEMD / "install.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0 and "sampling.interval_seconds" in out.stderr


def variant(tmp: Path, exe: Path, dropins: list[str]) -> Path:
    unit = tmp / "gpu-carbon-exporter.service"
    unit.write_text((SYSTEMD / "gpu-carbon-exporter.service").read_text()
                    .replace("/opt/gpu-carbon-exporter/bin/gpu-carbon-exporter", str(exe)))
    (tmp / "gpu-carbon-exporter.service.d").mkdir()
    for name in dropins:
        shutil.copy(SYSTEMD / "dropins" / f"{name}.conf", tmp / "gpu-carbon-exporter.service.d")
    return unit


def exposure(unit: Path) -> float:
    out = subprocess.run([require_binary("systemd-analyze"), "security", "--offline=true", str(unit)],
                         capture_output=True, text=True)
    return float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout).group(1))


@pytest.mark.parametrize("name", VARIANTS)
def test_systemd_verifies_the_unit_and_its_exposure_is_documented(installed, tmp_path, name):
    unit = variant(tmp_path, installed / "opt" / "bin" / "gpu-carbon-exporter", VARIANTS[name])
    out = subprocess.run([require_binary("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    score = exposure(unit)
    table = (ROOT / "docs" / "security.md").read_text()
    documented = re.search(rf"^\| {re.escape(name)} \| ([\d.]+) ", table, re.M)
    assert documented, f"docs/security.md has no exposure row for {name}"
    assert float(documented.group(1)) == score, (name, score)
    assert score < 3.0  # "OK" or better on systemd's scale


def test_drop_ins_add_only_what_their_feature_needs():
    rapl = (SYSTEMD / "dropins" / "rapl.conf").read_text()
    assert re.findall(r"^(\w+)=(.*)$", rapl, re.M) == [("AmbientCapabilities", "CAP_DAC_READ_SEARCH"),
                                                      ("CapabilityBoundingSet", "CAP_DAC_READ_SEARCH")]
    attribution = (SYSTEMD / "dropins" / "attribution.conf").read_text()
    assert re.findall(r"^(\w+)=(.*)$", attribution, re.M) == [("ProtectProc", "default")]

"""The container image and the compose stack (Docker cannot run here: these check what can be
checked without it). One image name and tag everywhere, the package version; a non-root image with a
health check on /healthz; the compose stack's Prometheus and Alertmanager configs pass promtool and
amtool, and every file it mounts exists."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from conftest import require_binary
from gpu_carbon_exporter import __version__

ROOT = Path(__file__).resolve().parent.parent
IMAGE = f"ghcr.io/gpu-carbon-exporter/gpu-carbon-exporter:{__version__}"
COMPOSE = ROOT / "deploy" / "compose"


def compose() -> dict:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def test_one_image_name_and_tag_everywhere():
    services = compose()["services"]
    assert services["exporter"]["image"] == services["edge-exporter"]["image"] == IMAGE
    kustomization = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "base" / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert f"{image['newName']}:{image['newTag']}" == IMAGE
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^ARG VERSION={re.escape(__version__)}$", dockerfile, re.M)
    assert f"docker build -t {IMAGE} ." in dockerfile


def test_dockerfile_is_slim_non_root_and_checks_health():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(re.fullmatch(r"python:3\.1[1-9]-slim(?: AS \w+)?", f) or f.endswith("-slim") for f in froms)
    (user,) = re.findall(r"^USER (\S+)", text, re.M)
    assert user.split(":")[0] not in ("0", "root")
    health = re.search(r"^HEALTHCHECK .*\n(?:.*\n)*?.*CMD (.*)$", text, re.M)
    assert health and "/healthz" in health.group(1)
    assert 'ENTRYPOINT ["gpu-carbon-exporter"]' in text
    for label in ("title", "version", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):  # every file the build copies exists
        for path in src.split():
            assert (ROOT / path).exists(), path


def test_dockerignore_sends_only_what_the_image_needs():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*" and {"!pyproject.toml", "!README.md", "!exporter/"} <= set(lines)


def test_compose_mounts_existing_files_and_its_configs_pass_promtool_and_amtool(tmp_path):
    services = compose()["services"]
    assert set(services) == {"exporter", "edge-exporter", "prometheus", "alertmanager", "grafana"}
    mounts = {}
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), source
                mounts[target] = (COMPOSE / source).resolve()
    prom = (COMPOSE / "prometheus.yml").read_text().replace("/etc/prometheus/rules",
                                                            str(mounts["/etc/prometheus/rules"]))
    (tmp_path / "prometheus.yml").write_text(prom)
    out = subprocess.run([require_binary("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 2 rule files found" in out.stdout
    out = subprocess.run([require_binary("amtool"), "check-config", str(COMPOSE / "alertmanager.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # Grafana's provider reads the folder the dashboards are mounted at
    provider = yaml.safe_load((ROOT / "grafana" / "provisioning" / "dashboards" / "gpu-carbon.yaml").read_text())
    assert mounts[provider["providers"][0]["options"]["path"]] == (ROOT / "grafana" / "dashboards").resolve()
    assert services["grafana"]["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    # the scrape targets are the compose services, on the exporter's port
    targets = {t for sc in yaml.safe_load(prom)["scrape_configs"] for c in sc["static_configs"] for t in c["targets"]}
    assert targets == {"exporter:9842", "edge-exporter:9842"}

"""The docs cannot drift from the CLI: every command shown in README.md and docs/*.md that can
run here is run (simulated), bench and script commands are checked against their --help, and the
configuration and scenario examples are validated by the production parsers."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpu_carbon_exporter.config import parse_config
from gpu_carbon_exporter.sim.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`((?:gpu-carbon-exporter(?= |`)|python3? (?:bench|scripts)/)[^`]*)`")  # not a label name
# Words standing for something the reader supplies, and what we supply for them here.
PLACEHOLDERS = {"FILE": "deploy/config/gpu-carbon-exporter.yml"}


def shell_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for lang, body in FENCE.findall(text):
            if lang in ("sh", "bash", "console"):
                for line in body.splitlines():
                    line = line.split("  #", 1)[0].strip()
                    found += [(doc.name, part.strip()) for part in line.split("&&") if part.strip()]
        found += [(doc.name, cmd) for cmd in INLINE.findall(text)]
    return sorted(set(found))


def yaml_examples(doc: str) -> list[str]:
    return [body for lang, body in FENCE.findall((ROOT / "docs" / doc).read_text()) if lang == "yaml"]


COMMANDS = shell_commands()


def test_the_docs_show_commands():
    assert any(c.startswith("gpu-carbon-exporter") for _, c in COMMANDS)
    assert any(c.startswith("python bench/") for _, c in COMMANDS)


@pytest.mark.parametrize("doc, command", COMMANDS, ids=[f"{d}: {c}" for d, c in COMMANDS])
def test_every_documented_command_runs(doc, command, tmp_path):
    argv = shlex.split(command)
    if argv[0] == "sudo":  # installs onto a node: the files it names must exist in the repository
        for arg in argv:
            if arg.startswith("deploy/"):
                assert (ROOT / arg).is_file(), f"{doc}: {command}: {arg} is missing"
        return
    if argv[0] in ("pip", "python3") and "install" in argv or argv[:3] == ["python3", "-m", "venv"] \
            or argv[0] == ".":
        return  # environment set-up, done by scripts/test.sh itself
    if argv[0] in ("scripts/test.sh", "scripts/local-stack.sh"):
        assert (ROOT / argv[0]).stat().st_mode & 0o111, f"{argv[0]} must be executable"
        return
    if argv[:2] in (["kubectl", "kustomize"], ["kubectl", "apply"]):  # rendered in tests/test_deploy_kubernetes.py
        assert (ROOT / argv[-1] / "kustomization.yaml").is_file(), f"{doc}: {command}: no kustomization there"
        return
    if argv[:2] == ["docker", "compose"]:  # Docker cannot run here: tests/test_deploy_image.py checks the file
        assert (ROOT / argv[argv.index("-f") + 1]).is_file(), f"{doc}: {command}: no such compose file"
        return
    if argv[0] == "gpu-carbon-exporter":
        args = [PLACEHOLDERS.get(a, a) for a in argv[1:]]
        if args[:1] in (["rules"], ["dashboards"]) and args[1:2] == ["--out"]:  # write into tmp, not the checkout
            args[2] = str(tmp_path)
        if "--prometheusrule" in args:
            args[args.index("--prometheusrule") + 1] = str(tmp_path / "prometheusrule.yaml")
        if args[:1] in (["stack"], ["report"]):  # need a running stack: tests/test_stack.py, test_report.py
            args.append("--help")
        if args[0] not in ("check-config", "rules", "dashboards", "stack", "report") and "--version" not in args \
                and "--help" not in args:
            assert "--simulate" in args, f"{doc}: {command}: needs a GPU; document a simulated form too"
            args += [] if "--once" in args else ["--once", "--once.duration", "0"]
        out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, f"{doc}: {command}\n{out.stderr[-2000:]}"
        return
    if argv[0] in ("python", "python3") and argv[1].startswith(("bench/", "scripts/")):
        assert (ROOT / argv[1]).is_file(), f"{doc}: {command}: no such script"
        help_text = subprocess.run([sys.executable, argv[1], "--help"], cwd=ROOT, capture_output=True, text=True,
                                   timeout=120).stdout
        for flag in (a for a in argv[2:] if a.startswith("--")):
            assert flag in help_text, f"{doc}: {command}: {flag} is not an option of {argv[1]}"
        return
    pytest.fail(f"{doc}: {command}: a documented command this test does not know how to check")


@pytest.mark.parametrize("body", yaml_examples("carbon.md"))
def test_carbon_examples_are_valid_configuration(body):
    data = yaml.safe_load(body if not body.startswith(" ") else "carbon:\n  zones:\n" + body)
    carbon = data["carbon"]
    carbon.setdefault("zone", next(iter(carbon["zones"])))
    parse_config(data, "docs/carbon.md")


def test_scenario_examples_parse(tmp_path):
    full, edge = yaml_examples("scenario.md")[:2]
    parse_scenario(yaml.safe_load(full), "docs/scenario.md")
    parse_scenario({**yaml.safe_load(edge), "devices": []}, "docs/scenario.md")


def test_every_numeric_key_is_documented_with_its_bounds():
    from gpu_carbon_exporter.config import schema_keys
    from gpu_carbon_exporter.schema import documented_type

    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `([\w.]+)`[^|]*\| ([^|]+?) \|", text, re.M))
    for key, spec in schema_keys().items():
        if spec[0] in (int, float):
            assert rows.get(key) == documented_type(spec), f"docs/configuration.md: {key}: want {documented_type(spec)}"


def test_live_provider_keys_are_documented_with_their_bounds():
    from gpu_carbon_exporter.config import ZONE_SCHEMA
    from gpu_carbon_exporter.schema import documented_type

    text = (ROOT / "docs" / "carbon.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", text, re.M))
    for key in ("poll_interval_seconds", "timeout_seconds", "retries", "max_age_seconds", "stale_after_seconds"):
        assert rows.get(key) == documented_type(ZONE_SCHEMA[key]), f"docs/carbon.md: {key}"

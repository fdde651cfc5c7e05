"""The docs cannot drift from the CLI or from what it prints.

Every command shown in README.md and docs/*.md that can run here is run as documented (simulated): one
that serves until stopped is started, scraped once it answers and stopped; bench and script commands,
which take minutes and real binaries, are checked against their --help. The configuration and scenario
examples are validated by the production parsers. Figures a command prints are either checked here
against what the command really prints (the series counts of docs/scale.md, the panel counts of
docs/dashboards.md, the rule groups of docs/rules.md, the error examples of docs/configuration.md) or
marked where they stand as a measurement: "(measured DATE on MACHINE: `COMMAND`)"."""
from __future__ import annotations

import datetime
import functools
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gpu_carbon_exporter.config import load_config, parse_config
from gpu_carbon_exporter.sim.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`((?:gpu-carbon-exporter(?= |`)|python3? (?:bench|scripts)/)[^`]*)`")  # not a label name
# Words standing for something the reader supplies, and what we supply for them here.
PLACEHOLDERS = {"FILE": str(ROOT / "deploy" / "config" / "gpu-carbon-exporter.yml")}
SUBCOMMANDS = ("check-config", "rules", "dashboards", "stack", "report")
# A measured figure's source, where it stands: the date, the machine, then the command that printed it
# (and, after it, how it was run where that matters).
MARKER = re.compile(r"\(measured (\d{4}-\d{2}-\d{2}) on ([^:()`]+): `([^`]+)`([^()]*)\)")
# Commands that print figures (a bench, a test run with -s): named in prose, they must be a marker's.
PRINTS_FIGURES = re.compile(r"^python3? (?:bench/|-m pytest -s )")
NOT_YET_MARKED: set[str] = set()  # every doc is held to the marker rule


def shell_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for lang, body in FENCE.findall(text):
            if lang in ("sh", "bash", "console"):
                for line in body.splitlines():
                    line = line.split("  #", 1)[0].strip()
                    found += [(doc.name, part.strip()) for part in line.split("&&") if part.strip()]
        found += [(doc.name, " ".join(cmd.split())) for cmd in INLINE.findall(text)]
    return sorted(set(found))


def yaml_examples(doc: str) -> list[str]:
    return [body for lang, body in FENCE.findall((ROOT / "docs" / doc).read_text()) if lang == "yaml"]


def prose(doc: Path) -> str:
    """The doc without its fenced blocks, every run of white space one space (prose wraps anywhere)."""
    return " ".join(FENCE.sub("", doc.read_text()).split())


COMMANDS = shell_commands()


def exporter_argv(args: list[str]) -> list[str]:
    """The documented console script of this environment (python -m where it is not installed)."""
    script = shutil.which("gpu-carbon-exporter", path=str(Path(sys.executable).parent))
    return [script, *args] if script else [sys.executable, "-m", "gpu_carbon_exporter", *args]


# --- Serving commands: started as documented, scraped once they answer, stopped -------------------------

def documented_url() -> str:
    """Where README.md tells the reader to look once the exporter runs."""
    found = re.search(r"<(http://localhost:\d+/metrics)>", (ROOT / "README.md").read_text())
    assert found, "README.md: the URL to open after starting the exporter is gone"
    return found.group(1)


@functools.cache
def private_netns() -> bool:
    """Whether a private network namespace can be made here: the documented port is then the command's
    own, whatever else on this machine listens on it."""
    return shutil.which("unshare") is not None and \
        subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


# What the exposition of a documented serving command holds once the meter has taken its second sample
# (rates, splits and job spans need two); its first answer can come before. The scrape waits for them.
SECOND_SAMPLE = {"gpu-carbon-exporter --simulate": ("gpu_carbon_gpu_attribution_info", "gpu_carbon_cpu_power_watts")}


@functools.cache
def served(command: str) -> str:
    """Run a documented serving command as documented; what it served once it answered (30-s ceiling)."""
    url = documented_url()
    helper = [sys.executable, str(ROOT / "tests" / "run_documented.py"), url, "30", *SECOND_SAMPLE.get(command, ()),
              "--", *exporter_argv(shlex.split(command)[1:])]
    if private_netns():
        helper = ["unshare", "-rn", *helper]
    else:
        with socket.socket() as s:
            try:
                s.bind(("", urlsplit(url).port))
            except OSError:
                pytest.skip(f"{url}: the port is taken here and no private network namespace can be made")
    with tempfile.TemporaryDirectory(prefix="docs-") as scratch:
        out = subprocess.run(helper, cwd=scratch, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, f"{command}\n{out.stderr[-2000:]}"
    return out.stdout


def serves_forever(args: list[str]) -> bool:
    return (not args or args[0] not in SUBCOMMANDS) and not {"--once", "--help", "--version"} & set(args)


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
        run_exporter_command(doc, command, [PLACEHOLDERS.get(a, a) for a in argv[1:]], tmp_path)
        return
    if argv[0] in ("python", "python3") and argv[1].startswith(("bench/", "scripts/")):
        check_script_flags(doc, command)
        return
    pytest.fail(f"{doc}: {command}: a documented command this test does not know how to check")


def run_exporter_command(doc: str, command: str, args: list[str], scratch: Path) -> None:
    if args[:1] in (["stack"], ["report"]):  # they need a Prometheus with data: tests/test_stack.py, test_report.py
        args.append("--help")
    if serves_forever(args):
        assert "--simulate" in args, f"{doc}: {command}: needs a GPU; document a simulated form too"
        assert "\ngpu_carbon_build_info{" in served(command), f"{doc}: {command}: no exposition"
        return
    # Run from a scratch directory, so that what it writes where the doc says lands there, not in the checkout.
    out = subprocess.run(exporter_argv(args), cwd=scratch, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{doc}: {command}\n{out.stderr[-2000:]}"
    if args[:1] in (["rules"], ["dashboards"]):  # what it writes is what the repository holds
        written = out.stdout.split()
        assert written, f"{doc}: {command}: wrote nothing"
        for path in written:
            assert (scratch / path).read_text() == (ROOT / path).read_text(), \
                f"{doc}: {command}: {path} differs from the committed file"


def check_script_flags(doc: str, command: str) -> None:
    argv = shlex.split(command)
    assert (ROOT / argv[1]).is_file(), f"{doc}: {command}: no such script"
    help_text = subprocess.run([sys.executable, argv[1], "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=120).stdout
    for flag in (a for a in argv[2:] if a.startswith("--")):
        assert flag in help_text, f"{doc}: {command}: {flag} is not an option of {argv[1]}"


# --- Figures a command prints, against what it prints -------------------------------------------------

# up, scrape_duration_seconds, scrape_samples_scraped, …_post_metric_relabeling, scrape_series_added
PROMETHEUS_PER_TARGET = 5
ATTRIBUTION = re.compile(r"gpu_carbon_gpu_((unallocated|idle|unattributed)_(energy_joules|emissions_grams)_total"
                         r"|attribution_info)")
# docs/scale.md's write_relabel_configs example for a fleet view
FLEET_VIEW = re.compile(r"gpu_carbon_.*_(energy_joules|emissions_grams)_total|gpu_carbon_gpu_up|gpu_carbon_job_info"
                        r"|gpu_carbon_grid_intensity_grams_per_kwh")


def samples(exposition: str) -> list[tuple[str, dict[str, str]]]:
    return [(s.name, s.labels) for family in text_string_to_metric_families(exposition) for s in family.samples]


def scale_rows() -> dict[str, tuple[str, str]]:
    """docs/scale.md's series table: the first words of each row → (series each, the demo node)."""
    text = (ROOT / "docs" / "scale.md").read_text()
    rows = re.findall(r"^\| (per [^|]+?) \| ([^|]+?) \| ([^|]+?) \|$", text, re.M)
    return {re.split(r":| \(", what)[0]: (each, demo) for what, each, demo in rows}


def demo_job_series(per_job: int) -> dict[str, list[int]]:
    """The demo's job series at each second of its cycle, from its scenario: just after a start (running jobs
    only) and once it has run a while (finished jobs linger for attribution.linger_seconds)."""
    scenario, linger = load_scenario(None), load_config(None)["attribution"]["linger_seconds"]
    out: dict[str, list[int]] = {"fresh": [], "steady": []}
    for t in range(int(scenario.cycle_s)):
        for kind in out:
            out[kind].append(sum(per_job + len(job.devices) for job in scenario.jobs
                                 if job.active(t) or kind == "steady" and job.end_s < float("inf")
                                 and (t - job.end_s) % scenario.cycle_s < linger))
    return out


def test_scale_md_series_counts_are_what_the_demo_node_exposes():
    demo = samples(served("gpu-carbon-exporter --simulate"))
    by_gpu, by_job, by_zone, node = Counter(), Counter(), Counter(), 0
    attribution, job_gpus, fleet_view, fleet_view_own = Counter(), Counter(), Counter(), 0
    for name, labels in demo:
        if "job_id" in labels:
            by_job[labels["job_id"]] += 1
            job_gpus[labels["job_id"]] += name == "gpu_carbon_job_gpu_info"
            fleet_view[labels["job_id"]] += bool(FLEET_VIEW.fullmatch(name))
            continue
        fleet_view_own += bool(FLEET_VIEW.fullmatch(name))
        if "gpu" in labels and name != "gpu_carbon_mig_instance_info":
            (attribution if ATTRIBUTION.fullmatch(name) else by_gpu)[labels["gpu"]] += 1
        elif name.startswith("gpu_carbon_cpu_") and "zone" in labels:
            by_zone[labels["zone"]] += 1
        else:
            node += 1
    assert by_job, "the demo node exposes no job (its job 4712 always runs)"
    # A job's start and end time come with its first counted energy (docs/metrics.md): a job that began
    # just before the scrape's sample may lack them, and is left out of the per-job count.
    counted = {labels["job_id"] for name, labels in demo if name == "gpu_carbon_job_start_time_seconds"}
    assert counted, "no job of the demo node has its energy counted (its job 4712 always runs)"
    per_job = {by_job[j] - job_gpus[j] for j in counted}
    assert len(per_job) == 1, f"jobs expose different numbers of series: {dict(by_job)} with GPUs {dict(job_gpus)}"
    per_job = per_job.pop()
    fleet_view_per_job = {fleet_view[j] for j in counted}
    assert len(fleet_view_per_job) == 1, fleet_view
    per_gpu, per_gpu_attribution = set(by_gpu.values()), set(attribution.values())
    assert len(per_gpu) == 1 and len(per_gpu_attribution) == 1, (by_gpu, attribution)
    jobs = demo_job_series(per_job)
    three_jobs = max(jobs["fresh"])
    own = sum(by_gpu.values()) + sum(attribution.values()) + sum(by_zone.values()) + node
    total = own + three_jobs
    zone_counts = sorted(set(by_zone.values()))
    rows = scale_rows()
    want = {"per GPU": (str(per_gpu.pop()), str(sum(by_gpu.values()))),
            "per GPU, attribution": (str(per_gpu_attribution.pop()), str(sum(attribution.values()))),
            "per RAPL zone": ("–".join(map(str, zone_counts)), str(sum(by_zone.values()))),
            "per node": (f"about {node}", str(node)),  # "about": other nodes have other collectors and sections
            "per job": (f"{per_job} + its GPUs", str(three_jobs))}
    for row, figures in want.items():
        assert rows.get(row) == figures, f"docs/scale.md: the {row!r} row: want {figures}, have {rows.get(row)}"

    text = prose(ROOT / "docs" / "scale.md")
    gpus = len(by_gpu)
    per_gpu_total = round((total + PROMETHEUS_PER_TARGET) / gpus)
    for figure in (f"exposes **{own} series of its own**", f"**{per_job} per job plus 1 per GPU the job holds**",
                   f"**{total} series** while its three jobs run, {total + PROMETHEUS_PER_TARGET} with "
                   "Prometheus's own",
                   f"that is {own + min(jobs['fresh'])} to {own + max(jobs['fresh'])} just after a start, and "
                   f"{own + min(jobs['steady'])} to {own + max(jobs['steady'])} once it has run a while",
                   f"about **{per_gpu_total} series per GPU**",
                   f"a node running {gpus} single-GPU jobs exposes {gpus * (per_job + 1)} job series where the "
                   f"demo's three expose {three_jobs}",
                   f"| active series | {per_gpu_total} | {per_gpu_total / 10:.1f} M |",
                   f"about {(fleet_view_own + 3 * fleet_view_per_job.pop()) / gpus:.1f} series per GPU on the demo "
                   f"node with its three jobs"):
        assert figure in text, f"docs/scale.md: {figure!r} is not there (the demo node exposes otherwise now)"


def test_scale_md_jetson_row_is_what_the_orin_exposes():
    orin = samples(served("gpu-carbon-exporter --simulate edge-orin"))
    rails = Counter((labels["sensor"], labels["rail"]) for name, labels in orin if name.startswith("gpu_carbon_rail_"))
    boards = Counter(labels["model"] for name, labels in orin if name.startswith("gpu_carbon_board_"))
    assert len(set(rails.values())) == 1 and len(boards) == 1, (rails, boards)
    each = f"{next(iter(rails.values()))} / {next(iter(boards.values()))}"
    assert scale_rows().get("per Jetson rail / board") == (each, "—"), f"docs/scale.md: Jetson row: want {each}"
    assert f"`--simulate edge-orin`: {len(rails)} rails, 1 board" in prose(ROOT / "docs" / "scale.md")


def test_dashboards_md_panel_counts_are_the_generated_ones():
    text = (ROOT / "docs" / "dashboards.md").read_text()
    documented = dict(re.findall(r"^## .*\(`(gpu-carbon-[\w-]+)`, (\d+) panels", text, re.M))
    generated = {}
    for path in (ROOT / "grafana" / "dashboards").glob("*.json"):  # the generator's output: tests/test_dashboards.py
        board = json.loads(path.read_text())
        generated[board["uid"]] = str(len(board["panels"]) + sum(len(p.get("panels", [])) for p in board["panels"]))
    assert documented == generated


def test_rules_md_groups_and_intervals_are_the_generated_ones():
    text = (ROOT / "docs" / "rules.md").read_text()
    for path, what in re.findall(r"^\| `(prometheus/rules/[\w.-]+)` \| ([^|]+) \|$", text, re.M):
        groups = yaml.safe_load((ROOT / path).read_text())["groups"]
        generated = {g["name"]: g.get("interval") for g in groups}
        documented = {name: (re.search(r"`interval: (\w+)`", note) or [None, None])[1]
                      for name, note in re.findall(r"`(gpu_carbon_\w+)` \(((?:[^()]|\([^()]*\))*)\)", what)}
        assert documented == generated, f"docs/rules.md: {path}"


def test_readme_usage_names_real_flags_and_the_defaults_help_prints():
    usage = re.search(r"^## Usage\n\n```\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S).group(1)
    synopses = re.split(r"\n(?=gpu-carbon-exporter)", usage.strip())
    for synopsis in synopses:
        words = synopsis.split()
        sub = [w for w in words[1:2] if w in SUBCOMMANDS]
        help_text = subprocess.run(exporter_argv([*sub, "--help"]), capture_output=True, text=True, timeout=60).stdout
        flat = " ".join(help_text.split())
        for flag in re.findall(r"--[\w.-]+", synopsis):
            assert flag in help_text, f"README.md: {synopsis.splitlines()[0]}: {flag} is not in its --help"
        for flag, default in re.findall(r"\[(--[\w.-]+) \w+ \((\w+)\)\]", synopsis):  # "[--flag V (default)]"
            assert f"default {default})" in flat, f"README.md: {flag} ({default}): --help gives another default"
            if flag == "--scrape-interval":
                assert f"`--scrape-interval` (default {default}," in prose(ROOT / "docs" / "install.md")


def test_install_md_quotes_the_measured_exposure_of_the_unit():
    # tests/test_deploy_systemd.py measures each unit's exposure against docs/security.md's table
    measured = re.search(r"^\| base unit \| ([\d.]+) \|", (ROOT / "docs" / "security.md").read_text(), re.M)
    assert measured and f"`systemd-analyze security`: {measured.group(1)} for the base unit" in \
        prose(ROOT / "docs" / "install.md")


def test_configuration_md_error_examples_are_what_check_config_prints(tmp_path):
    # The file behind each documented error: the example names the key, and this is the file that breaks it.
    files = {"carbon.pue": "carbon:\n  pue: 0.9\n", "zone": "# exporter.yml\nzone: DE\nx: 1\nzone: FR\n"}
    examples = re.findall(r"^error: (\S+): ([\w.]+): (.*)$", (ROOT / "docs" / "configuration.md").read_text(), re.M)
    assert {key for _, key, _ in examples} == set(files)
    for path, key, message in examples:
        config = tmp_path / Path(path).name
        config.write_text(files[key])
        out = subprocess.run(exporter_argv(["check-config", str(config)]), capture_output=True, text=True, timeout=60)
        assert out.returncode == 2
        assert out.stderr.strip() == f"error: {config}: {key}: {message}", "docs/configuration.md: the example differs"


# --- Measurements: marked with their date, machine and command --------------------------------------

def markers() -> list[tuple[str, str, str, str, str]]:
    return [(doc.name, *m) for doc in DOCS for m in MARKER.findall(prose(doc))]


def test_measurements_carry_a_date_a_machine_and_a_command_that_exists():
    found = markers()
    assert found, "no measurement marker in the docs"
    today = datetime.date.today()
    for doc, date, machine, command, _ in found:
        assert datetime.date.fromisoformat(date) <= today, f"{doc}: measured {date}: in the future"
        assert machine.strip(), f"{doc}: measured {date}: on which machine?"
        argv = shlex.split(command)
        if argv[:3] == ["python", "-m", "pytest"]:
            files = [a for a in argv if a.startswith("tests/")]
            assert files and all((ROOT / f).is_file() for f in files), f"{doc}: {command}: no such test file"
            if "-k" in argv:  # each word of the expression names a test of those files
                source = "".join((ROOT / f).read_text() for f in files)
                tests = re.findall(r"^def (test_\w+)", source, re.M)
                for word in set(re.findall(r"\w+", argv[argv.index("-k") + 1])) - {"and", "or", "not"}:
                    assert any(word in t for t in tests), f"{doc}: {command}: -k {word} selects no test"
        # bench, script and exporter commands in a marker are among COMMANDS, checked above


@pytest.mark.parametrize("doc", [d for d in DOCS if d.name not in NOT_YET_MARKED], ids=lambda d: d.name)
def test_every_command_that_prints_figures_is_named_by_a_measurement(doc):
    """A bench or a test run with -s named in prose is where figures came from: it must say when and where."""
    text = prose(doc)
    spans = [m.span() for m in MARKER.finditer(text)]
    for code in re.finditer(r"`([^`]+)`", text):
        if PRINTS_FIGURES.match(code.group(1)):
            assert any(a <= code.start() < b for a, b in spans), \
                f"{doc.name}: `{code.group(1)}` is named without a marker '(measured DATE on MACHINE: `COMMAND`)'"


# --- Examples validated by the production parsers ---------------------------------------------------

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

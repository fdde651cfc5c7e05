"""`gpu-carbon-exporter report`: per-job reports read from a real Prometheus scraping two
simulated exporters, against the simulator's ground truth — a multi-node job, an exporter killed
and restarted mid-job, a before/after pair (the same work at fp16- and int8-like power) with
declared units of work; the HTML report in a real headless Chromium; and each kind of bad input."""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_port, require_binary
from fakeapi import FakeApi, slow
from gpu_carbon_exporter.sim.scenario import GroundTruth, parse_scenario
from gpu_carbon_exporter.stack import Exporter, LocalStack

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
H100, MI300X = "NVIDIA H100 80GB HBM3", "AMD Instinct MI300X"
O = 8.0  # noqa: E741 — every process is up by then
END = O + 24
KILL_AT = O + 9
TOKENS = 6000


def node_a(start: float) -> dict:
    """GPU 0: node a's part of the two-node job 701; GPU 1: job 702, the fp16-like run (420 W for
    24 s); GPU 2: job 703, the int8-like run of the same work (300 W for 16 s)."""
    return {"name": "report-a", "start_time": start, "zone": "DEU", "pue": 1.2,
            "intensity": {"DEU": [[0, 380], [O + 12, 250]]},
            "devices": [{"model": H100, "power": {"pattern": "steps", "steps": [[0, 0], [O, 500], [END, 0]]}},
                        {"model": H100, "power": {"pattern": "steps", "steps": [[0, 0], [O, 420], [END, 0]]}},
                        {"model": H100, "power": {"pattern": "steps", "steps": [[0, 0], [O + 2, 300], [O + 18, 0]]}}],
            "jobs": [{"id": "701", "user": "ivy", "team": "llm", "start_s": O, "end_s": END, "devices": [0]},
                     {"id": "702", "user": "ann", "team": "nlp", "start_s": O, "end_s": END, "devices": [1]},
                     {"id": "703", "user": "ann", "team": "nlp", "start_s": O + 2, "end_s": O + 18, "devices": [2]}]}


# Job 704's hand-computable truth: 650 W for its first half, 300 W for its second, on a GPU of its own.
STEP_W = ((O, 650.0), (O + 12, 300.0))


def node_b(start: float) -> dict:
    """A mixed node. NVIDIA GPU 0: node b's part of job 701; NVIDIA GPU 1: job 704, power that steps
    (STEP_W); AMD GPU 0 (each vendor numbers its GPUs from 0): job 705."""
    return {"name": "report-b", "start_time": start, "zone": "FRA", "pue": 1.1, "intensity": {"FRA": [[0, 60]]},
            "devices": [{"model": H100, "power": {"pattern": "steps", "steps": [[0, 0], [O, 550], [END, 0]]}},
                        {"model": H100, "power": {"pattern": "steps", "steps": [[0, 0], *STEP_W, [END, 0]]}},
                        {"model": MI300X, "power": {"pattern": "steps", "steps": [[0, 140], [O, 700], [END, 140]]}}],
            "jobs": [{"id": "701", "user": "ivy", "team": "llm", "start_s": O, "end_s": END, "devices": [0]},
                     {"id": "704", "user": "ann", "team": "nlp", "start_s": O, "end_s": END, "devices": [1]},
                     {"id": "705", "user": "jon", "team": "llm", "start_s": O, "end_s": END, "devices": [2]}]}


def report(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "report", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The stack, run through the jobs: yields (Prometheus URL, ground truths, partial report, dir)."""
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("report")
    start = time.time()
    scen = {"a": node_a(start), "b": node_b(start)}
    work = tmp / "work"
    work.mkdir()
    (work / "702").write_text(f"{TOKENS} tokens\n")  # what the jobs would write (deploy/slurm/prolog.sh)
    (work / "703").write_text(f"{TOKENS} tokens\n")
    exporters = []
    for n in ("a", "b"):
        (tmp / f"{n}.yaml").write_text(yaml.safe_dump(scen[n]))
        (tmp / f"{n}.config.yml").write_text(yaml.safe_dump({"attribution": {"work_dir": str(work)}}))
        exporters.append(Exporter(n, str(tmp / f"{n}.yaml"), site="s1", cluster="c1", args=(
            "--config", str(tmp / f"{n}.config.yml"), "--sampling.interval", "0.1",
            "--state.path", str(tmp / f"state-{n}.json"))))
    stack = LocalStack(tmp / "stack", exporters=exporters, scrape_interval="250ms", grafana=False, prometheus_port=0,
                       alertmanager_port=0)
    base = None
    try:
        stack.start()
        base = f"http://127.0.0.1:{stack.prometheus_port}"
        assert time.time() - start < O, "processes took too long to start"
        time.sleep(max(0.0, start + KILL_AT - time.time()))
        stack.procs["a"].stop(signal.SIGKILL)  # a crash mid-job, restarted 2 s later (systemd: RestartSec)
        time.sleep(2)
        stack.procs["a"].start()
        time.sleep(max(0.0, start + O + 14 - time.time()))
        partial = report("701", "--prometheus", base, "--format", "json")
        time.sleep(max(0.0, start + END + 5 - time.time()))
        truths = {n: GroundTruth(parse_scenario(scen[n])) for n in scen}
        tmp.joinpath("started").write_text(repr(start))  # the scenarios' time 0 (unix s)
        yield base, truths, partial, tmp
    finally:
        stack.stop()


def truth_of(truths: dict, job_id: str) -> tuple[float, float]:
    """(J, g) allocated to a job over all nodes, from the simulator's closed forms."""
    joules = grams = 0.0
    for truth in truths.values():
        for job in truth.sc.jobs:
            if job.id == job_id:
                joules += truth.job_allocated_j(job, 0, END + 5)
                grams += truth.job_allocated_g(job, 0, END + 5)
    return joules, grams


def test_report_totals_agree_with_ground_truth(fleet):
    base, truths, _, _ = fleet
    worst = 0.0
    for job_id in ("701", "702", "703"):
        out = report(job_id, "--prometheus", base, "--format", "json")
        assert out.returncode == 0, out.stderr
        totals = json.loads(out.stdout)["report"]["totals"]
        joules, grams = truth_of(truths, job_id)
        for what, got, want in (("kWh", totals["energy_kwh"], joules / 3.6e6), ("g", totals["operational_g"], grams)):
            err = got / want - 1
            worst = max(worst, abs(err))
            print(f"job {job_id} {what}: report {got:.6g}, truth {want:.6g}, error {100 * err:+.3f} %")
            assert got == pytest.approx(want, rel=0.01), (job_id, what)
    print(f"worst error: {100 * worst:.3f} %")


def test_multi_node_job_is_broken_down_by_node_and_gpu_and_shows_the_restart_gap(fleet):
    base, truths, _, _ = fleet
    data = json.loads(report("701", "--prometheus", base, "--format", "json").stdout)["report"]
    assert [n["node"] for n in data["nodes"]] == ["a", "b"]
    assert {(g["node"], g["vendor"], g["gpu"]) for g in data["gpus"]} == {("a", "nvidia", "0"), ("b", "nvidia", "0")}
    for node, truth in (("a", truths["a"]), ("b", truths["b"])):
        (job,) = [j for j in truth.sc.jobs if j.id == "701"]
        got = next(n["energy_j"] for n in data["nodes"] if n["node"] == node)
        assert got == pytest.approx(truth.job_allocated_j(job, 0, END + 5), rel=0.01), node
    assert data["owner"]["team"] == "llm" and "user" not in data["owner"]  # users only with attribution.expose_user
    assert {s["zone"] for s in data["intensity_sources"]} == {"DEU", "FRA"}
    assert [g["node"] for g in data["gaps"]] == ["a"]  # the crash, reported, never filled in
    assert not data["partial"]
    assert data["totals"]["duration_s"] == pytest.approx(END - O, abs=2.0)
    # power, summed over the nodes, is never made up across the gap: its peak is the nodes' sum
    # (each point a mean over four 250-ms scrapes of counters sampled every 100 ms)
    assert data["peak_power_w"] == pytest.approx(500 + 550, rel=0.1)


def test_a_mixed_nodes_jobs_each_list_only_their_own_gpu(fleet):
    """Node b: job 701 on NVIDIA GPU 0 (550 W), job 705 on AMD GPU 0 (700 W). Each job's report lists
    only its own GPU there, by vendor, and from the node's exporter too. From Prometheus, with that
    GPU's energy over the job's time: the simulator's truth, to within what the span's two ends may
    miss or add, a second of the GPU's power each on a loaded machine (test_report_is_exact_to_the_
    sample's bound): 1 100 J and 1 400 J, where the other GPU 0 would read 3 600 J off."""
    base, truths, _, tmp = fleet
    url = json.loads((tmp / "stack" / "stack.json").read_text())["urls"]["b"]
    for job_id, vendor, device, watts in (("701", "nvidia", 0, 550.0), ("705", "amd", 2, 700.0)):
        out = report(job_id, "--prometheus", base, "--format", "json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)["report"]
        (row,) = [g for g in data["gpus"] if g["node"] == "b"]
        want = truths["b"].device_energy_j(device, O, END)
        print(f"job {job_id}: {vendor} GPU {row['gpu']} on b, report {row['gpu_energy_j']:.1f} J, truth {want:.1f} J")
        assert (row["vendor"], row["gpu"]) == (vendor, "0")
        assert abs(row["gpu_energy_j"] - want) <= 2 * 1.0 * watts
        local = report(job_id, "--exporter", url, "--format", "json")
        assert local.returncode == 0, local.stderr
        assert [(g["vendor"], g["gpu"]) for g in json.loads(local.stdout)["report"]["gpus"]] == [(vendor, "0")]
    (job,) = [j for j in truths["b"].sc.jobs if j.id == "705"]
    assert data["totals"]["energy_kwh"] == pytest.approx(truths["b"].job_allocated_j(job, 0, END + 5) / 3.6e6, rel=0.01)


def exposed_span(url: str, job_id: str) -> tuple[float, float]:
    """The job's start and end as its exporter exposes them (gpu_carbon_job_{start,end}_time_seconds)."""
    from prometheus_client.parser import text_string_to_metric_families

    import requests

    url = url if url.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"
    text = requests.get(url, timeout=30).text
    found = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.labels.get("job_id") == job_id and s.name.endswith("_time_seconds")}
    return found["gpu_carbon_job_start_time_seconds"], found["gpu_carbon_job_end_time_seconds"]


def test_report_is_exact_to_the_sample(fleet):
    """Job 704 (STEP_W): 650 W, then 300 W, from O to END. Its duration is exactly the span its exporter
    exposes, that span within a sampling interval (on a loaded machine: a second) of the truth; its peak
    never above 650 W, the most any sample shows; its mean within 1 % of the true 475 W; and its
    power curve steps where the power steps, and ends at its end."""
    base, _, _, tmp = fleet
    t0 = float((tmp / "started").read_text())
    data = json.loads(report("704", "--prometheus", base, "--format", "json").stdout)["report"]
    start, end = exposed_span(json.loads((tmp / "stack" / "stack.json").read_text())["urls"]["b"], "704")
    print(f"job 704: start {data['start'] - t0 - O:+.3f} s, end {data['end'] - t0 - END:+.3f} s from the truth; "
          f"duration {data['totals']['duration_s']:.3f} s; peak {data['peak_power_w']:.2f} W (true 650); "
          f"mean {data['totals']['mean_power_w']:.2f} W (true 475)")
    assert (data["start"], data["end"]) == (start, end)
    assert data["totals"]["duration_s"] == end - start
    assert 0 <= start - (t0 + O) < 1.0 and 0 <= end - (t0 + END) < 1.0
    assert 650 * 0.99 <= data["peak_power_w"] <= 650.0
    true_mean = sum(w * 12 for _, w in STEP_W) / (END - O)
    assert data["totals"]["mean_power_w"] == pytest.approx(true_mean, rel=0.01)
    bins = data["power"]
    assert bins[0][0] == start and bins[-1][1] == end  # from its start to its end, nothing beyond
    assert all(a < b for a, b, _ in bins) and all(x[1] == y[0] for x, y in zip(bins, bins[1:]))
    # Each plateau at its level, the only bins between levels those within a second of a step. A bin
    # is exact where the exporter's samples are on time; one that a loaded machine held up a few tens
    # of ms moves energy between two neighbouring bins (their sum stays exact): a few such bins may
    # stray, never the plateau's median or mean.
    step_at = t0 + STEP_W[1][0]
    plateaus = {650.0: [w for a, b, w in bins if start + 1 <= a and b <= step_at - 1],
                300.0: [w for a, b, w in bins if step_at + 1 <= a and b <= t0 + END - 1]}
    for level, ws in plateaus.items():
        assert len(ws) >= 30, (level, len(ws))
        assert statistics.median(ws) == pytest.approx(level, rel=0.005), (level, ws)
        assert statistics.fmean(ws) == pytest.approx(level, rel=0.01), (level, ws)
        assert sum(abs(w / level - 1) > 0.05 for w in ws) <= len(ws) // 10, (level, ws)
    # Steps, not slopes: at its level from its first bin to its last, and crossing between levels
    # where the power steps (each bin's neighbourhood by its median, past any strayed bin).
    smooth = [statistics.median(w for _, _, w in bins[max(i - 2, 0):i + 3]) for i in range(len(bins))]
    assert statistics.median(w for _, _, w in bins[:5]) == pytest.approx(650.0, rel=0.005)
    assert statistics.median(w for _, _, w in bins[-5:]) == pytest.approx(300.0, rel=0.005)
    crossing = next(i for i, w in enumerate(smooth) if w < (650.0 + 300.0) / 2)
    assert abs((bins[crossing][0] + bins[crossing][1]) / 2 - step_at) <= 0.5, bins[crossing][0] - t0


def test_a_running_job_is_reported_as_partial(fleet):
    _, _, partial, _ = fleet
    assert partial.returncode == 0, partial.stderr
    data = json.loads(partial.stdout)["report"]
    assert data["partial"] and "running" in data["partial_reason"]
    assert "partial" in json.loads(partial.stdout)["disclosure"]


def test_text_report_fits_80_columns_and_says_what_is_inside(fleet):
    base, _, _, _ = fleet
    out = report("702", "--prometheus", base)
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert max(len(line) for line in out.stdout.splitlines()) <= 80
    for needle in ("Energy (allocated)", "Operational CO₂e", "CO₂e per GPU kWh", "Grid intensity", "Per unit (tokens)",
                   "Disclosure", "Not included"):
        assert needle in out.stdout, needle


def test_before_and_after_comparison_shows_the_known_ratio(fleet):
    base, truths, _, tmp = fleet
    out = report("702", "--compare", "703", "--prometheus", base, "--format", "json", "--out", str(tmp / "cmp"))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["unit"] == "tokens"
    fp16, int8 = (v["per_unit"] for v in data["variants"])
    (j702, g702), (j703, g703) = truth_of(truths, "702"), truth_of(truths, "703")
    want = (j703 / TOKENS) / (j702 / TOKENS)
    got = int8["kwh"] / fp16["kwh"]
    print(f"int8 / fp16 energy per token: report {got:.4f}, truth {want:.4f}, error {100 * (got / want - 1):+.3f} %")
    assert got == pytest.approx(want, rel=0.01)
    assert int8["g"] / fp16["g"] == pytest.approx((g703 / TOKENS) / (g702 / TOKENS), rel=0.01)
    assert any("703 / 702, energy per unit of work (tokens)" in n and "±" in n for n in data["notes"])
    text = report("702", "--compare", "703", "--prometheus", base)
    print(text.stdout)
    assert max(len(line) for line in text.stdout.splitlines()) <= 80
    assert (tmp / "cmp" / "comparison.png").stat().st_size > 1000 and (tmp / "cmp" / "comparison.svg").exists()


# In an SVG plot (text kept as text, parts named by plots.py): the boxes Chromium lays out.
LAYOUT = """() => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const all = s => Array.from(document.querySelectorAll(s)).map(box);
  return {svg: box(document.querySelector('svg')), legend: all('#legend'), title: all('#title'),
          plot: all('#plot-area'), ticks: all('[id^="xtick_"] text, [id^="ytick_"] text'), texts: all('text'),
          labels: Array.from(document.querySelectorAll('#legend text')).map(t => t.textContent)};
}"""
# A number with a decimal point in a table cell, and its significant digits.
DECIMAL = r"(?<![\d.,])(\d[\d,]*\.\d+)"


def overlaps(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def check_plot_layout(page, svg: Path) -> list[str]:
    """The legend overlaps neither the title, nor a tick label, nor the plot; every text is inside the
    picture. Returns the legend's labels."""
    page.goto(svg.as_uri())
    got = page.evaluate(LAYOUT)
    (legend,), (title,) = got["legend"], got["title"]
    assert not overlaps(legend, title), (svg.name, legend, title)
    for other in got["ticks"] + got["plot"]:
        assert not overlaps(legend, other), (svg.name, legend, other)
    left, top, right, bottom = got["svg"]
    for t in got["texts"]:
        assert left <= t[0] and top <= t[1] and t[2] <= right and t[3] <= bottom, (svg.name, t)
    return got["labels"]


def test_html_report_renders_in_headless_chromium(fleet, tmp_path):
    """The HTML in a real headless Chromium: no empty header row, numbers to three significant
    digits, and plots whose legends overlap neither title, tick nor plot, and name the lines that
    overlap (a made-up job with two GPUs drawing the same power)."""
    import re

    from gpu_carbon_exporter.report import plots

    base, _, _, tmp = fleet
    out = report("701", "--prometheus", base, "--out", str(tmp / "html"))
    assert out.returncode == 0, out.stderr
    for name in ("report.txt", "report.md", "report.html", "report.json", "job-701-power.png", "job-701-power.svg",
                 "job-701-cumulative.png", "job-701-intensity.png"):
        assert (tmp / "html" / name).stat().st_size > 0, name
    twins = made_up("9", 0.01, 1000.0)
    twins.start, twins.end = 1e9, 1e9 + 360
    flat = [(1e9 + t, 300.0 if t < 360 else 0.0) for t in range(0, 361, 15)]
    twins.gpu_power = {"n/0": flat, "n/1": list(flat), "n/2": [(t, w / 2) for t, w in flat]}
    twins.cumulative = [(1e9 + t, 300.0 * t, 300.0 * t / 3.6e6 * 200) for t in range(0, 361, 15)]  # 200 g/kWh
    twin_plots = plots.job_plots(twins, tmp_path)
    from playwright.sync_api import sync_playwright

    chromium = require_binary("chromium")
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((tmp / "html" / "report.html").as_uri())
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
            heading = page.inner_text("h1")
            headers = page.evaluate("Array.from(document.querySelectorAll('th')).map(th => th.textContent)")
            first_row = page.evaluate("Array.from(document.querySelector('table tr').cells).map(c => c.tagName)")
            cells = page.evaluate("Array.from(document.querySelectorAll('td')).map(td => td.textContent)")
            page.screenshot(path=str(tmp / "report.png"), full_page=True)
            legends = {svg.name: check_plot_layout(page, svg) for svg in sorted((tmp / "html").glob("job-701-*.svg"))}
            twin_legends = [check_plot_layout(page, png.with_suffix(".svg")) for png in twin_plots.values()]
        finally:
            browser.close()
    assert not errors, errors
    assert heading == "GPU carbon report — job 701"
    assert len(images) == 3 and all(ok for _, ok in images), images
    assert all(h.strip() for h in headers), headers  # no empty header cell, so no empty grey row
    assert first_row == ["TH", "TD"]  # the summary opens with its first field
    for number in (m for c in cells for m in re.findall(DECIMAL, c)):
        assert len(number.replace(",", "").replace(".", "").lstrip("0")) <= 3, number
    assert len(legends) == 3 and all(legends.values()), legends
    assert twin_legends == [["n/0, n/1 (overlapping)", "n/2"],
                            ["energy (kWh)", "CO₂e (g): on the energy line (a constant intensity)"]]
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copy(tmp / "report.png", ROOT / "docs" / "img" / "report.png")


def test_the_local_exporter_gives_totals_while_the_job_lingers(fleet):
    base, truths, _, tmp = fleet
    state = json.loads((tmp / "stack" / "stack.json").read_text())
    out = report("703", "--exporter", state["urls"]["a"], "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["report"]
    joules, _ = truth_of(truths, "703")
    assert data["totals"]["energy_kwh"] == pytest.approx(joules / 3.6e6, rel=0.01)
    assert data["work"] == {"tokens": TOKENS} and "totals only" in data["source"]
    assert (data["start"], data["end"]) == exposed_span(state["urls"]["a"], "703")  # its duration, exactly
    assert data["totals"]["mean_power_w"] == pytest.approx(300.0, rel=0.01)


# -- bad input ---------------------------------------------------------------------
@pytest.fixture
def api():
    server = FakeApi()
    yield server
    server.close()


EMPTY = (200, {}, {"status": "success", "data": {"resultType": "vector", "result": []}})


def test_an_unknown_job_is_a_clear_error(api):
    api.routes["/api/v1/query"] = EMPTY
    out = report("nope", "--prometheus", api.url)
    assert out.returncode == 1 and "no job 'nope'" in out.stderr and not out.stdout


def test_a_prometheus_that_is_down_slow_or_answers_garbage(api):
    out = report("1", "--prometheus", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 3 and "is not reachable" in out.stderr
    api.routes["/api/v1/query"] = slow(3.0, EMPTY)
    started = time.monotonic()
    out = report("1", "--prometheus", api.url, "--timeout", "0.5")
    assert out.returncode == 3 and "did not answer within 0.5 s" in out.stderr
    assert time.monotonic() - started < 10
    api.routes["/api/v1/query"] = (200, {}, "<html>a login page</html>")
    out = report("1", "--prometheus", api.url)
    assert out.returncode == 3 and "not the Prometheus HTTP API" in out.stderr
    api.routes["/api/v1/query"] = (400, {}, {"status": "error", "errorType": "bad_data", "error": "parse error"})
    out = report("1", "--prometheus", api.url)
    assert out.returncode == 3 and "parse error" in out.stderr


def test_bad_arguments_exit_2(api):
    assert report("1", "--work", "10").returncode == 2  # --work without --work-unit
    assert report("1", "--work", "-5", "--work-unit", "tokens").returncode == 2
    out = report("1", "--prometheus", api.url, "--bearer-token-file", "/nonexistent/token")
    assert out.returncode == 2 and "/nonexistent/token" in out.stderr


# -- the Slurm epilog ----------------------------------------------------------------
def epilog(tmp: Path, job_id: str, prometheus: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "gpu-carbon-exporter"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m gpu_carbon_exporter \"$@\"\n")
    exe.chmod(0o755)
    env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURM_JOB_UID": str(os.getuid()), "SLURM_JOB_GID": str(os.getgid()),
           "GPU_CARBON_PROMETHEUS": prometheus, "GPU_CARBON_EXPORTER": str(exe), "GPU_CARBON_REPORT_DELAY": "0",
           "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    started = time.monotonic()
    out = subprocess.run(["bash", str(ROOT / "deploy" / "slurm" / "epilog-report.sh")], env=env, capture_output=True,
                         text=True, timeout=30)
    return out, time.monotonic() - started


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), path


def test_slurm_epilog_writes_the_report_beside_the_jobs_output(fleet):
    base, _, _, tmp = fleet
    job_dir = tmp / "job-output"
    job_dir.mkdir()
    (tmp / "bin").mkdir(exist_ok=True)
    scontrol = tmp / "bin" / "scontrol"  # what slurmctld says of the job and of its node list
    scontrol.write_text(f"#!/bin/sh\ncase \"$2\" in\n  hostnames) echo \"$FIRST_HOST\";;\n"
                        f"  job) echo 'JobId=702 JobName=train UserId=ann(1500) WorkDir=/nonexistent "
                        f"StdOut={job_dir}/slurm-702.out StdErr={job_dir}/slurm-702.out';;\nesac\n")
    scontrol.chmod(0o755)
    # a multi-node job: a node that is not its first writes nothing
    out, took = epilog(tmp, "702", base, SLURM_JOB_NODELIST="gpu[07-08]", FIRST_HOST="gpu07")
    assert out.returncode == 0 and took < 5, (out.stderr, took)
    out, took = epilog(tmp, "702", base, SLURM_JOB_NODELIST="gpu[07-08]",
                       FIRST_HOST=subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip())
    assert out.returncode == 0 and took < 5, (out.stderr, took)  # returns at once; the report runs detached
    wait_for(job_dir / "gpu-carbon-report-702.md")  # moved into place last
    assert "GPU carbon report — job 702" in (job_dir / "gpu-carbon-report-702.md").read_text()
    assert (job_dir / "gpu-carbon-report-702.html").read_text().startswith("<!DOCTYPE html>")
    assert not (job_dir / "gpu-carbon-report-702.err").exists()
    # the .md is moved into place last, so nothing else of the report can still arrive
    assert sorted(p.name for p in job_dir.iterdir()) == [f"gpu-carbon-report-702.{x}" for x in ("html", "json", "md")]


def test_slurm_epilog_never_waits_for_a_prometheus_that_is_down_or_slow(tmp_path, api):
    api.routes["/api/v1/query"] = slow(20.0, EMPTY)
    for name, url in (("down", f"http://127.0.0.1:{free_port()}"), ("slow", api.url)):
        out_dir = tmp_path / name
        out_dir.mkdir()
        out, took = epilog(tmp_path, "9", url, GPU_CARBON_REPORT_DIR=str(out_dir), GPU_CARBON_REPORT_TIMEOUT="3")
        assert out.returncode == 0 and took < 5, (name, took)
        wait_for(out_dir / "gpu-carbon-report-9.err", timeout=30)  # the script's last act, never beside a .md
        assert not (out_dir / "gpu-carbon-report-9.md").exists(), name
    assert "not reachable" in (tmp_path / "down" / "gpu-carbon-report-9.err").read_text()
    assert "no report within 3 s" in (tmp_path / "slow" / "gpu-carbon-report-9.err").read_text()


# -- the arithmetic, on made-up samples ----------------------------------------------
def test_counter_totals_across_restarts_restores_and_new_series():
    from gpu_carbon_exporter.report.collect import counter_total, merged, restarts
    from gpu_carbon_exporter.report.prom import Series

    assert counter_total([(1, 100.0), (2, 300.0), (3, 600.0)]) == 600.0  # from 0 with the job
    # an exporter that lost its state: from 0 again (600 before, then 50 and 250 more)
    assert counter_total([(1, 100.0), (2, 600.0), (3, 50.0), (4, 300.0)]) == 900.0
    # one that restored a checkpoint older than its last scrape: counting goes on from there
    assert counter_total([(1, 100.0), (2, 600.0), (3, 580.0), (4, 700.0)]) == 720.0
    assert restarts([(1, 100.0), (2, 600.0), (3, 580.0), (4, 700.0)]) == 1
    # Kubernetes: the restarted exporter's pod is a new series whose first value carries on
    old = Series({"node": "n1", "pod": "exp-a"}, [(1, 1000.0), (2, 5000.0), (3, 10000.0)])
    new = Series({"node": "n1", "pod": "exp-b"}, [(5, 10400.0), (6, 15000.0)])
    other = Series({"node": "n2", "pod": "exp-c"}, [(1, 10.0), (6, 70.0)])
    totals = {k: counter_total(v) for k, v in merged([new, old, other]).items()}
    assert totals == {("n1", ""): 15000.0, ("n2", ""): 70.0}


def test_counter_samples_take_the_exporters_sample_times():
    """A job counter scraped at 10, 20, 30 s holds the values sampled at 9.5, 19.2, 29.9 s (the end
    gauge of the same scrape): 1 000 W throughout, which the scrape times would read as 970 and
    1 070 W. A sample from before the job's first energy (no span yet) is dropped; an exporter
    without the gauge keeps its scrape times, and says so."""
    from gpu_carbon_exporter.report.collect import _power_and_cumulative, sampled_at
    from gpu_carbon_exporter.report.prom import Series

    target = {"node": "n", "instance": "n:9842"}
    energy = Series({**target, "__name__": "gpu_carbon_job_energy_joules_total", "view": "allocated"},
                    [(0.0, 0.0), (10.0, 500.0), (20.0, 10200.0), (30.0, 20900.0)])
    ends = Series({**target, "__name__": "gpu_carbon_job_end_time_seconds"}, [(10.0, 9.5), (20.0, 19.2), (30.0, 29.9)])
    (restamped,), exact = sampled_at([energy], [ends])
    assert exact and restamped.samples == [(9.5, 500.0), (19.2, 10200.0), (29.9, 20900.0)]
    power, _ = _power_and_cumulative([restamped], [restamped], 9.0, 29.9, 10.0, [], {"n": 9.0})
    assert [round(w, 6) for _, _, w in power] == [1000.0, 1000.0, 1000.0]
    assert (power[0][0], power[-1][1]) == (9.0, 29.9)
    (kept,), exact = sampled_at([energy], [])
    assert not exact and kept.samples == energy.samples


def test_a_held_gpu_is_looked_up_by_node_vendor_and_index():
    """NVIDIA GPU 0 and AMD GPU 0 on one node: a held GPU (or MIG instance) reads its own vendor's;
    one exposed without a vendor (an exporter from before the label) reads the node's GPU of that
    index, as reports did before."""
    from gpu_carbon_exporter.report.collect import _physical

    by_gpu = {("n", "amd", "0"): "amd0", ("n", "nvidia", "0"): "nv0", ("n", "nvidia", "1"): "nv1"}
    assert _physical(by_gpu, "n", "nvidia", "0") == "nv0" and _physical(by_gpu, "n", "amd", "0") == "amd0"
    assert _physical(by_gpu, "n", "nvidia", "1.2") == "nv1"  # a MIG instance: its physical GPU
    assert _physical(by_gpu, "n", "amd", "1") is None and _physical(by_gpu, "m", "nvidia", "0") is None
    assert _physical(by_gpu, "n", "", "1") == "nv1"


def test_gaps_include_nodes_that_start_late_or_stop_early():
    from gpu_carbon_exporter.report.collect import _gaps
    from gpu_carbon_exporter.report.prom import Series

    a = Series({"node": "a"}, [(t, t * 10.0) for t in range(0, 61)])
    b = Series({"node": "b"}, [(t, t * 10.0) for t in range(20, 41)])  # late and early
    c = Series({"node": "c"}, [(t, t * 10.0) for t in [*range(0, 30), *range(35, 61)]])  # 5 s hole
    gaps = [(g.node, g.start, g.end) for g in _gaps([a, b, c], 1.0, 0.0, 60.0)]
    assert gaps == [("b", 0.0, 20.0), ("c", 29.0, 35.0), ("b", 40.0, 60.0)]


def made_up(job_id: str, kwh: float, tokens: float, partial: bool = False):
    from gpu_carbon_exporter.report.model import GpuRow, JobReport, NodeTotals

    node = "gpu-node-with-a-long-name-0001.cluster.example.org"
    return JobReport(job_id=job_id, cluster="c", scheduler="slurm", owner={"team": "nlp"}, start=1e9,
                     end=1e9 + 50 * 3600 + 123, partial=partial, partial_reason="is still running" if partial else "",
                     source="http://prometheus:9090", nodes=[NodeTotals(node, energy_j=kwh * 3.6e6, grams=kwh * 300,
                                                                         gpu_seconds=3600)],
                     gpus=[GpuRow(node, "0", kwh * 3.6e6, 0.5, 700.0)], gaps=[], intensity_sources=[],
                     fallback_share=None, pue=1.2, mean_utilization=0.5, peak_power_w=700.0, methods=["counter"],
                     work={"tokens": tokens}, work_source="exporter")


def test_text_stays_within_80_columns_and_loses_nothing_that_matters():
    from gpu_carbon_exporter.report import render

    text = render.text(made_up("1234567", 1000.0, 1e9, partial=True))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "50h 02m 03s" in text.replace("\n" + " " * 22, " ")  # wrapped, not cut
    assert "gpu-node-with-a-long-na…0001.cluster.example.org" in text  # a long node name shortened in the middle
    assert "PARTIAL: the job is still running" in text


def test_numbers_keep_three_significant_digits_across_a_power_of_ten():
    from gpu_carbon_exporter.report.render import fmt

    # 359.99 GPU-seconds: 0.09999 h printed as "0.1000 h" beside another job's "0.200 h"
    assert [fmt(s / 3600, "h") for s in (359.99, 720.0)] == ["0.100 h", "0.200 h"]
    assert [fmt(w, "W") for w in (849.9999, 999.7, 9.9996, 123456.7, 0.000466)] == [
        "850 W", "1,000 W", "10.0 W", "123,457 W", "0.000466 W"]


def test_several_runs_per_variant_add_their_spread_to_the_uncertainty():
    from gpu_carbon_exporter.report import render

    a = render.Variant("fp16", [made_up(str(i), kwh, 1000.0) for i, kwh in enumerate((10.0, 11.0, 12.0))])
    b = render.Variant("int8", [made_up(str(10 + i), kwh, 1000.0) for i, kwh in enumerate((5.0, 5.0, 5.0))])
    kwh_a, _, rel_a, _ = a.per_unit("tokens")
    kwh_b, _, rel_b, _ = b.per_unit("tokens")
    assert kwh_a == pytest.approx(0.011) and kwh_b == pytest.approx(0.005)
    sem = (1.0 / 3 ** 0.5) / 11.0  # standard error of the mean, relative: sd 1 kWh over 3 runs
    assert rel_a == pytest.approx((0.01 ** 2 + sem ** 2) ** 0.5)
    assert rel_b == pytest.approx(0.01)  # identical runs: the measurement's bound alone, never less
    (note,) = [n for n in render.comparison_rows([a, b])[2] if "energy per unit" in n]
    ratio, unc = 0.005 / 0.011, 0.005 / 0.011 * (rel_a ** 2 + rel_b ** 2) ** 0.5
    assert f"{ratio:.3f} ± {unc:.3f}" in note

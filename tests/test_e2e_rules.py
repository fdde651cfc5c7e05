"""End to end through the rules at the 15-s scrapes production runs: two simulated exporters
(jobs-mix's devices and jobs on node a, a multi-node job on both, NVIDIA, AMD and Intel GPUs on
node b) scraped by a real Prometheus that evaluates the generated recording rules, alerts and a
small budget, and a real Alertmanager that routes the budget alert, with the example
configuration's routes, to a webhook this test runs. Mid-run, exporter a is killed with SIGKILL
and restarted, and Prometheus is stopped for 30 s. Every window read from the recording rules
(job, team, node, site, fleet; energy and emissions) must match the simulator's ground truth
within 0.1 % once its jobs have ended, from the first evaluation after their last growth on (no
extrapolation past a finished job's flat end), and within 1 % for jobs still running; the 7d/30d
team windows, sums of tiles, never more, and less by at most what the jobs used from the last
tile before Prometheus's outage to its start."""
from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from gpu_carbon_exporter.sim.scenario import GroundTruth, parse_scenario
from gpu_carbon_exporter.stack import Exporter, LocalStack

from conftest import free_port, require_binary
from procs import last_evaluations, query, wait_for_series, wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
H100 = "NVIDIA H100 80GB HBM3"
SCRAPE = 15.0  # prometheus/prometheus.yml's and docs/rules.md's interval
O = 15.0  # noqa: E741 — scenario seconds before the first job: every process is up by then
# Prometheus goes down while jobs run and comes back after job 9001 ended (its last growth is first
# seen after the outage) and before the others end.
KILL_AT, PROM_STOP_AT, PROM_GAP = O + 25, O + 55, 30.0
END = O + 90
WINDOWS = ["2m", "1h", "1d", "7d", "30d"]  # 2m: a node window that the run covers whole
FINISHED_TOL, RUNNING_TOL = 0.001, 0.01
TILE, TILE_DELAY = 15.0, 10.0  # the tiles of this test's settings (below) and the default tile_delay
LATE_S = 0.05  # how late the exporter's 50-ms samples may see a job start on a loaded machine
# A sub-second job's truth is finer than the exporter's 50-ms samples: one sample of a 0.3-s job is 17 % of it,
# and a sample seeing its start LATE_S late moves another 17 % (+21.3 % once beside five busy test runs).
SUB_SECOND_TOL = (0.05 + LATE_S) / 0.3


def node_a(start: float) -> dict:
    """jobs-mix's devices and jobs (churn, a 60/40 shared GPU, MIG, sub-second jobs) over 90 s, not
    cyclic, plus a GPU for the multi-node job 9100."""
    return {
        "name": "e2e-a", "start_time": start, "zone": "DEU", "pue": 1.2,
        "intensity": {"DEU": [[0, 380], [O + 30, 250]]},
        "devices": [
            {"model": H100, "power": {"pattern": "steps", "steps": [[0, 75], [O, 610], [O + 40, 90], [O + 41, 480],
                                                                     [O + 85, 72]]}},
            {"model": H100, "power": {"pattern": "square", "period_s": 0.01, "duty": 0.5, "high_w": 650, "low_w": 300}},
            {"model": H100, "mig_instances": 2, "power": {"pattern": "constant", "watts": 430}},
            {"model": H100, "power": {"pattern": "square", "period_s": 0.1, "duty": 0.5, "high_w": 500, "low_w": 200}},
            {"model": H100, "power": {"pattern": "constant", "watts": 500}},
        ],
        "jobs": [
            {"id": "9001", "user": "ann", "team": "nlp", "start_s": O, "end_s": O + 40, "devices": [0]},
            {"id": "9002", "user": "bob", "team": "nlp", "start_s": O + 41, "end_s": O + 85, "devices": [0]},
            {"id": "9003", "user": "cat", "team": "vision", "start_s": O, "end_s": END, "devices": [1], "share": 0.6},
            {"id": "9004", "user": "dan", "team": "vision", "start_s": O, "end_s": END, "devices": [1], "share": 0.4},
            {"id": "9005", "user": "eve", "team": "rl", "start_s": O, "end_s": END, "devices": [2], "mig_instance": 0,
             "share": 0.5},
            {"id": "9006", "user": "fay", "team": "rl", "start_s": O + 5, "end_s": O + 70, "devices": [2],
             "mig_instance": 1, "share": 0.5},
            {"id": "9007", "user": "gus", "team": "search", "start_s": O + 6.2, "end_s": O + 6.7, "devices": [3]},
            {"id": "9008", "user": "hal", "team": "search", "start_s": O + 8.1, "end_s": O + 8.4, "devices": [3]},
            {"id": "9100", "user": "ivy", "team": "llm", "start_s": O + 2, "end_s": END - 4, "devices": [4]},
        ],
    }


def node_b(start: float) -> dict:
    """A mixed node: NVIDIA GPUs (through the simulated NVML) for the multi-node job 9100, an AMD
    Instinct (the amdgpu sysfs source) with no job, and an Intel Max (the xe hwmon source and its
    DRM clients) running job 9102: the rules count every vendor's joules alike."""
    return {
        "name": "e2e-b", "start_time": start, "zone": "FRA", "pue": 1.1, "intensity": {"FRA": [[0, 60]]},
        "devices": [
            {"model": H100, "power": {"pattern": "steps", "steps": [[0, 80], [O + 2, 550], [END - 4, 80]]}},
            {"model": "NVIDIA L40S", "power": {"pattern": "constant", "watts": 300}},
            {"model": "AMD Instinct MI300X", "power": {"pattern": "square", "period_s": 2.4, "duty": 0.75,
                                                        "high_w": 720, "low_w": 430}},
            {"model": "Intel Data Center GPU Max 1550", "power": {"pattern": "steps", "steps": [[0, 95], [O + 5, 520],
                                                                                             [O + 60, 96]]}},
        ],
        "jobs": [{"id": "9100", "user": "ivy", "team": "llm", "start_s": O + 2, "end_s": END - 4, "devices": [0, 1]},
                 {"id": "9102", "user": "jon", "team": "llm", "start_s": O + 5, "end_s": O + 60, "devices": [3]}],
    }


def device_index(sc, uuid: str) -> int:
    """The scenario device an exposed GPU is, by its uuid: each vendor's GPUs are numbered by their own
    source (`gpu` repeats on a mixed node); an Intel card's uuid is its PCI address."""
    from gpu_carbon_exporter.sim.intel import pci_address

    return next(d.index for d in sc.devices if uuid in (d.uuid, f"intel-{pci_address(d)}"))


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Hook.received.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def alertmanager_config(hook_port: int) -> dict:
    """The example configuration's routes, with its receivers pointed at this test's webhook."""
    cfg = yaml.safe_load((ROOT / "prometheus" / "alertmanager.yml").read_text())
    cfg["route"].update(group_wait="1s", group_interval="1s")
    for r in cfg["receivers"]:
        for w in r.get("webhook_configs", []):
            w["url"] = f"http://127.0.0.1:{hook_port}/{r['name']}"
    return cfg


Series = dict[tuple[str, ...], list[tuple[float, float]]]  # label values -> [(time, value)]


def by_label(rows: list[dict], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in rows}


def history(base: str, selector: str, at: float, keys: tuple[str, ...]) -> Series:
    """Every raw sample of ``selector`` in the 10 minutes before ``at``, keyed by ``keys`` labels."""
    out: Series = {}
    for r in query(base, f"{selector}[10m]", at):
        key = tuple(r["metric"].get(k, "") for k in keys)
        out[key] = sorted((float(ts), float(v)) for ts, v in r["values"])
    return out


def recent(values: list[tuple[float, float]], t: float) -> list[tuple[float, float]]:
    """The last two samples at or before ``t``: the rule evaluated at ``t`` read one of them (a
    scrape stamped just before an evaluation may be appended just after it), or none if the
    series had fewer than two then (its first scrape may not have been appended yet)."""
    before = [s for s in values if s[0] <= t]
    return before[-2:][::-1] + ([(float("nan"), 0.0)] if len(before) < 2 else [])


def closest(rule: float, parts: list[list[tuple[float, float]]]) -> tuple[float, list[float]]:
    """The choice of one sample per part whose values add up closest to ``rule``: (relative gap,
    the chosen samples' times). An exact rule matches some choice to rounding."""
    best = (float("inf"), [])
    choices: list[tuple[float, list[float]]] = [(0.0, [])]
    for options in parts:
        choices = [(v + value, ts + [t]) for v, ts in choices for t, value in options]
    for total, ts in choices:
        gap = abs(total - rule) / max(abs(rule), 1e-12)
        best = min(best, (gap, ts))
    return best


def test_rules_budget_alert_and_windows_through_prometheus_and_alertmanager(tmp_path):
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    start = time.time()
    scen = {"a": node_a(start), "b": node_b(start)}
    hook_port = free_port()
    # The rules, generated with a tiny budget, a 2-minute window the run covers whole, and every group
    # at the scrape interval so the test need not wait for the production minutes (exactness does not
    # depend on them: the windows read samples, not evaluation times).
    budgets = {"settings": {"long_interval": "15s", "window_interval": "15s", "tile": f"{TILE:.0f}s",
                            "budget_for": "0s", "windows": WINDOWS},
               "budgets": [{"name": "nlp-tiny", "scope": "team", "match": "nlp", "limit": "0.5 g", "window": "1d"}]}
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
    Hook.received = []
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    for n in ("a", "b"):
        (tmp_path / f"{n}.yaml").write_text(yaml.safe_dump(scen[n]))
    # The local stack users start with `gpu-carbon-exporter stack`, here with this test's nodes.
    stack = LocalStack(
        tmp_path / "stack", budgets=budgets, scrape_interval="15s", evaluation_interval="15s",
        alertmanager_config=alertmanager_config(hook_port), grafana=False, prometheus_port=0, alertmanager_port=0,
        exporters=[Exporter(n, str(tmp_path / f"{n}.yaml"), site="s1", cluster="c1",
                            args=("--sampling.interval", "0.05", "--state.path", str(tmp_path / f"state-{n}.json")))
                   for n in ("a", "b")])
    stack.prepare()
    procs = stack.procs
    base = f"http://127.0.0.1:{stack.prometheus_port}"

    def exceeded() -> list[tuple[str, dict]]:
        return [(p, a) for p, body in list(Hook.received) for a in body["alerts"]
                if a["labels"]["alertname"] == "GpuCarbonBudgetExceeded"]

    def last_eval(group: str) -> float:
        """When ``group`` last began an evaluation (Prometheus's rules API)."""
        return last_evaluations(base)[group]

    try:
        stack.start()
        assert time.time() - start < O, "processes took too long to start"

        def sleep_until(t: float) -> None:
            time.sleep(max(0.0, start + t - time.time()))

        sleep_until(KILL_AT)
        procs["a"].stop(signal.SIGKILL)  # a crash mid-job; the restart recovers the downtime
        procs["a"].start()
        try:  # the budget alert reaches the webhook before Prometheus stops
            wait_until(exceeded, start + PROM_STOP_AT - time.time(), "the budget alert")
        except TimeoutError:
            pass  # asserted below, after the stack is down
        alert_seen = bool(exceeded())
        running = {}  # the running jobs' windows just before the outage
        for q in ("job:gpu_carbon_job_energy_kwh:increase1h", "job:gpu_carbon_job_emissions_grams:increase1h"):
            running[q] = history(base, q, time.time(), ("job_id",))
        sleep_until(PROM_STOP_AT)
        stopping = time.time() - start  # scenario seconds (a loaded machine sleeps late)
        procs["prometheus"].stop()
        stopped = time.time() - start
        sleep_until(PROM_STOP_AT + PROM_GAP)
        restarted = time.time()
        procs["prometheus"].start()
        # Prometheus hands targets to its scrapers up to 5 s after start, and an instant query still
        # returns the samples from before the outage: wait for fresh scrapes of both targets.
        up = 'timestamp(up{job="gpu-carbon-exporter"})'
        wait_for_series(base, f"count({up} > {restarted:.3f}) == 2", timeout=45)
        # Every job has ended and lingers, flat: wait for a scrape of both nodes after the end, then for
        # the windows, the tiles (which end tile_delay before their evaluation) and the long windows
        # evaluated after it.
        sleep_until(END + 1)
        wait_for_series(base, f"count({up} > {start + END + 1:.3f}) == 2", timeout=45)
        final_scrape = max(float(r["value"][1]) for r in query(base, up))
        tiles = wait_until(lambda: (t := last_eval("gpu_carbon_tiles")) - 10 > final_scrape + 0.5 and t, 60,
                           "a tile after the final scrape")
        wait_until(lambda: min(last_eval("gpu_carbon_windows_long"), last_eval("gpu_carbon_windows")) > tiles + 0.5,
                   60, "the windows after that tile")
        # the 2-minute node windows must lie wholly after each node's first scrape (a loaded machine starts
        # them late): else a device counter new in the window falls back to increase()
        first = max(v[0][0] for v in history(base, 'up{job="gpu-carbon-exporter"}', time.time(), ("node",)).values())
        wait_until(lambda: last_eval("gpu_carbon_windows") > first + 120 + SCRAPE, 120 + 2 * SCRAPE,
                   "a 2-minute window wholly after both nodes' first scrapes")
        at = time.time()
        jobs_rule = {q: history(base, q, at, ("job_id",)) for q in (
            "job:gpu_carbon_job_energy_kwh:increase1h", "job:gpu_carbon_job_emissions_grams:increase1h")}
        latest = {q: by_label(query(base, q, at), label) for q, label in [
            *((f"job:gpu_carbon_job_{m}:increase{w}", "job_id") for m in ("energy_kwh", "emissions_grams")
              for w in ("1h", "1d")),
            *((f"team:gpu_carbon_job_{m}:increase{w}", "team") for m in ("energy_kwh", "emissions_grams")
              for w in ("1h", "1d", "7d", "30d")),
            *((f"{lvl}:gpu_carbon_{m}:increase2m", lvl_label) for m in ("energy_kwh", "emissions_grams")
              for lvl, lvl_label in (("node", "node"), ("site", "site"), ("fleet", "fleet")))]}
        evaluated = {r["metric"]["node"]: float(r["value"][1])
                     for r in query(base, "timestamp(node:gpu_carbon_energy_kwh:increase2m)", at)}
        raw = {"job_j": history(base, 'gpu_carbon_job_energy_joules_total{view="allocated"}', at, ("node", "job_id")),
               "job_g": history(base, 'gpu_carbon_job_emissions_grams_total{view="allocated"}', at, ("node", "job_id")),
               "gpu_j": history(base, "gpu_carbon_gpu_energy_joules_total", at, ("node", "uuid")),
               "gpu_g": history(base, "gpu_carbon_gpu_emissions_grams_total", at, ("node", "uuid"))}
        vendors = by_label(query(base, 'count by (vendor) (gpu_carbon_gpu_info{node="b"})', at), "vendor")
    finally:
        stack.stop()
        hook.shutdown()
    assert vendors == {"nvidia": 2, "amd": 1, "intel": 1}, vendors  # node b's mixed fleet, each GPU once
    # The budget alert reached the webhook, routed by severity (on-call) and by team, with its labels.
    assert alert_seen, "the budget alert did not reach the webhook before Prometheus was stopped"
    assert {p for p, _ in exceeded()} >= {"/oncall", "/team-nlp"}
    labels = exceeded()[0][1]["labels"]
    assert (labels["budget"], labels["team"], labels["severity"], labels["scope"]) == \
        ("nlp-tiny", "nlp", "critical", "team")
    assert "nlp" in exceeded()[0][1]["annotations"]["description"]

    truths = {n: GroundTruth(parse_scenario(scen[n])) for n in scen}
    jobs = {(n, j.id): j for n, tr in truths.items() for j in tr.sc.jobs}
    ended = {j.id: max(job.end_s for (_, jid), job in jobs.items() if jid == j.id) for j in (v for v in jobs.values())}
    team_of = {j.id: j.team for j in jobs.values()}
    started = {j.id: j.start_s for j in jobs.values()}
    sub_second = {"9007", "9008"}  # their truth is finer than the exporter's 50-ms sampling
    worst = {"finished": 0.0, "running": 0.0, "node": 0.0, "tiled": 0.0}

    def job_truth(kind: str, job_id: str, times: dict[str, float]) -> float:
        """The job's allocated J or g up to each node's sample time."""
        fn = "job_allocated_j" if kind == "job_j" else "job_allocated_g"
        return sum(getattr(truths[n], fn)(jobs[(n, job_id)], 0, t - start) for n, t in times.items())

    def check_job_rule(name: str, kind: str, scale: float, job_id: str, t_e: float, value: float) -> str:
        """One evaluation of a job's window against the raw counters it read and the ground truth."""
        nodes = [n for n in scen if (n, job_id) in jobs]
        gap, ts = closest(value * scale, [recent(raw[kind].get((n, job_id), []), t_e) for n in nodes])
        assert gap < 1e-9, f"{name} {job_id} at {t_e}: not the counters' values (gap {gap:.2e})"
        if any(t != t for t in ts):  # a node's share not scraped yet: the rules cannot know it
            return f"{name} {job_id} at +{t_e - start:.0f} s: exact, a node not scraped yet"
        times = dict(zip(nodes, ts))
        truth = job_truth(kind, job_id, times)
        finished = all(t - start > ended[job_id] for t in ts)
        err = value * scale / truth - 1
        state = "finished" if finished else "running"
        # A job younger than a scrape interval is mostly the exporter's 50-ms sampling at its start
        # (-1.8 % for a 2.7-s-old job in one run), not the rules: held to the targets from 15 s on.
        young = not finished and min(t - start for t in ts) - started[job_id] < SCRAPE
        if job_id not in sub_second and not young:
            worst[state] = max(worst[state], abs(err))
            # the exporter (not the rules: they equal its counters, above) sees a job start at a sample, which
            # a busy 2-core machine can delay by up to LATE_S: what that moves is allowed for
            late = LATE_S / (ended[job_id] - started[job_id])
            assert abs(err) <= (FINISHED_TOL if finished else RUNNING_TOL) + late, (name, job_id, t_e, state, err)
        return f"{name} {job_id} at +{t_e - start:.0f} s ({state}{', young' if young else ''}): {100 * err:+.4f} %"

    # Every evaluation of the 1h job windows Prometheus holds (before and after the outage, and from
    # the first after each job's end on): exact counters, and the truth within the targets.
    lines = []
    for series in (running, jobs_rule):
        for name, rows in series.items():
            kind, scale = ("job_j", 3.6e6) if "energy" in name else ("job_g", 1.0)
            for (job_id,), values in rows.items():
                for t_e, value in values:
                    lines.append(check_job_rule(name, kind, scale, job_id, t_e, value))
    print("\n".join(sorted(set(lines))))
    # The latest of every job and team window, all jobs ended: their totals within 0.1 %.
    totals = {k: {} for k in ("job_j", "job_g")}
    around_outage = {k: {} for k in ("job_j", "job_g")}
    # What the missed tiles lose: the growth from the end of the last tile evaluated before the outage
    # (at most a tile plus tile_delay before it, and a tile more where the loaded machine made
    # Prometheus skip the evaluation before: one run beside a full suite read -35.4 % against the one-tile
    # bound's -30.6 %) to Prometheus's last scrape. The growth during the outage is not lost: the first
    # tile after it reads back to the last sample before it (docs/rules.md).
    lost_from, lost_to = stopping - (2 * TILE + TILE_DELAY + 1), stopped + 1
    for (n, job_id), job in jobs.items():
        for kind, fn in (("job_j", "job_allocated_j"), ("job_g", "job_allocated_g")):
            totals[kind][job_id] = totals[kind].get(job_id, 0.0) + getattr(truths[n], fn)(job, 0, END + 10)
            around_outage[kind][job_id] = (around_outage[kind].get(job_id, 0.0)
                                           + getattr(truths[n], fn)(job, lost_from, lost_to))
    for name, got in latest.items():
        level, metric, ops = name.split(":")
        if level not in ("job", "team"):
            continue
        kind, scale = ("job_j", 3.6e6) if "energy" in metric else ("job_g", 1.0)
        want: dict[str, float] = {}
        outage: dict[str, float] = {}  # what each job used around Prometheus's outage
        for job_id, v in totals[kind].items():
            key = job_id if level == "job" else team_of[job_id]
            want[key] = want.get(key, 0.0) + v
            outage[key] = outage.get(key, 0.0) + around_outage[kind][job_id]
        assert set(got) == set(want), (name, sorted(got), sorted(want))
        for k, w in sorted(want.items()):
            err = got[k] * scale / w - 1
            print(f"{name} {k}: rules {got[k] * scale:.6g}, truth {w:.6g}, error {100 * err:+.4f} %")
            if k in sub_second or k == "search":
                assert abs(err) <= SUB_SECOND_TOL, (name, k, err)
            elif ops in ("increase7d", "increase30d"):
                # Sums of tiles: the tile evaluations Prometheus missed while down lose the growth
                # from the last tile before the outage to its start (docs/rules.md): never more.
                worst["tiled"] = max(worst["tiled"], abs(err))
                assert -outage[k] / w <= err <= FINISHED_TOL, (name, k, err, -outage[k] / w)
            else:
                worst["finished"] = max(worst["finished"], abs(err))
                # as for every evaluation above: what one exporter sample seeing a job start late moves
                late = max(LATE_S / (ended[j] - started[j]) for j in totals[kind]
                           if (j if level == "job" else team_of[j]) == k)
                assert abs(err) <= FINISHED_TOL + late, (name, k, err, late)
    # Node, site and fleet over a whole 2-minute window (across the exporter's restart and
    # Prometheus's outage): each node's growth between the samples the rule read, against the truth.
    for metric, kind in (("energy_kwh", "gpu_j"), ("emissions_grams", "gpu_g")):
        scale = 3.6e6 if kind == "gpu_j" else 1.0
        sums = {"site": 0.0, "fleet": 0.0}
        for n, t_e in evaluated.items():
            devices = sorted(k for k in raw[kind] if k[0] == n)
            value = latest[f"node:gpu_carbon_{metric}:increase2m"][n] * scale
            # one sample time per node (its devices are scraped together), at each end of the window
            best = (float("inf"), 0.0, 0.0)
            seen = [s for s in raw[kind][devices[0]] if s[0] <= t_e]  # the node's scrape times
            for t1, _ in seen[-2:]:
                for t0, _ in [s for s in seen if s[0] <= t_e - 120][-2:]:
                    total = sum(dict(raw[kind][d])[t1] - dict(raw[kind][d])[t0] for d in devices)
                    best = min(best, (abs(total - value) / value, t0, t1))
            gap, t0, t1 = best
            assert gap < 1e-9, f"node {n} {metric}: not the counters' growth (gap {gap:.2e})"
            tr = truths[n]
            index = [device_index(tr.sc, d[1]) for d in devices]
            assert sorted(index) == list(range(len(tr.sc.devices))), (n, devices)  # every GPU, every vendor
            if kind == "gpu_j":
                truth = sum(tr.device_energy_j(i, t0 - start, t1 - start) for i in index)
            else:
                truth = sum(tr.device_emissions_g(i, t0 - start, t1 - start) for i in index)
            err = value / truth - 1
            worst["node"] = max(worst["node"], abs(err))
            print(f"node:gpu_carbon_{metric}:increase2m {n} over {t1 - t0:.1f} s: rules {value:.6g}, "
                  f"truth {truth:.6g}, error {100 * err:+.4f} %")
            assert abs(err) <= FINISHED_TOL, (metric, n, err)
            sums["site"] += value
            sums["fleet"] += value
        for level in ("site", "fleet"):
            got = sum(latest[f"{level}:gpu_carbon_{metric}:increase2m"].values()) * scale
            assert abs(got / sums[level] - 1) < 1e-9, (level, metric, got, sums[level])
    print(f"worst errors: finished jobs and teams {100 * worst['finished']:.4f} %, running jobs "
          f"{100 * worst['running']:.4f} %, nodes over a whole window {100 * worst['node']:.4f} %; "
          f"7d/30d team windows (tiles, across the outage) {100 * worst['tiled']:.4f} %")

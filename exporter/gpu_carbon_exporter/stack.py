"""A local stack in one command, from local binaries: simulated exporters, Prometheus with the
generated rules, Alertmanager, and Grafana with the provisioned dashboards when it is installed.

``gpu-carbon-exporter stack`` (and ``scripts/local-stack.sh``) runs it until Ctrl-C; the
end-to-end tests drive the same class, so the stack users start is the one that is tested.
Prometheus and Alertmanager come from the OS packages (Debian: ``prometheus``,
``prometheus-alertmanager``); Grafana from Grafana's own packages.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]  # a checkout: grafana/ and prometheus/ beside exporter/
INSTALL_HINT = ("sudo apt-get install -y prometheus prometheus-alertmanager   (Debian/Ubuntu); "
                "or use Docker: docker compose -f deploy/compose/compose.yaml up")
GRAFANA_HINT = ("Grafana is not installed: see https://grafana.com/docs/grafana/latest/setup-grafana/installation/ "
                "(Debian: Grafana's apt repository, package grafana), or use deploy/compose/compose.yaml")
# Budgets of the demo (the demo scenario's teams), so the budget dashboard and alerts have data.
DEMO_BUDGETS = {"budgets": [
    {"name": "search-weekly", "scope": "team", "match": "search", "limit": "50 kg", "window": "7d"},
    {"name": "datacenter-daily", "scope": "fleet", "match": "datacenter", "limit": "200 kWh", "window": "1d"}]}
# The scrape interval the provisioned Grafana datasource declares (its jsonData.timeInterval, on
# which $__rate_interval builds) and the rules' defaults assume; the stack scrapes at it unless asked.
DEFAULT_SCRAPE_INTERVAL = "15s"
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d)$")  # the Prometheus durations the stack's options take
# Placeholder for parsing a budgets document's settings when its budget list is empty (the rules
# generator requires budgets; the stack runs fine without).
_NO_BUDGET = {"name": "none", "scope": "fleet", "match": "none", "limit": "1 g", "window": "1d"}


class StackError(Exception):
    """A piece of the stack is missing or did not start; the message says which and what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port (a system Prometheus on 9090, an installed exporter
    on 9842): its readiness URL would answer for the wrong process."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Exporter:
    """One simulated exporter: ``name`` is its ``node`` label."""

    name: str
    scenario: str = "demo"  # a built-in scenario or a scenario file
    fleet: str = "datacenter"
    site: str = "local"
    cluster: str = "local"
    port: int = 0  # 0: any free port
    args: tuple[str, ...] = ()


class Proc:
    """A child process with a log file, started and stopped by signal; restartable."""

    def __init__(self, name: str, argv: list[str], ready: str, logs: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.ready, self.logs, self.env = name, argv, ready, logs, env
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self, timeout: float = 60.0) -> "Proc":
        self.runs += 1
        log = open(self.logs / f"{self.name}.{self.runs}.log", "w")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)  # Ctrl-C reaches the stack, which stops each
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError(f"{self.name} exited with {self.proc.returncode}: see {self.logs}/{self.name}."
                                 f"{self.runs}.log")
            try:
                with urllib.request.urlopen(self.ready, timeout=1) as r:
                    if r.status == 200 and self.proc.poll() is None:  # answered, and by our process
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise StackError(f"{self.name} did not answer {self.ready} within {timeout:.0f} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


def read_yaml(path: Path) -> Any:
    """A budgets file's content through the project's one YAML reader (duplicate keys refused, errors
    naming the file, as the rules generator's); an empty file is no budgets."""
    from .errors import ConfigError
    from .yamlio import read_yaml as read_config_yaml
    from .mixin import BudgetError

    try:
        data = read_config_yaml(path)
    except ConfigError as err:
        raise BudgetError(str(err)) from err
    return {"budgets": []} if data is None else data


def with_alert_for(content: dict, duration: str) -> dict:
    """A rule file's content with every alert's `for:` set to ``duration`` ("0s": none), and the groups
    holding alerts evaluated at the stack's interval (the health group's own is a minute): to see an
    alert fire within seconds."""
    groups = []
    for group in content["groups"]:
        if any("alert" in rule for rule in group["rules"]):
            group = {k: v for k, v in group.items() if k != "interval"}
        rules = []
        for rule in group["rules"]:
            if "alert" in rule:
                rule = {k: v for k, v in rule.items() if k != "for"}
                if not re.fullmatch(r"0+(ms|s|m|h|d)?", duration):
                    rule = {"alert": rule["alert"], "expr": rule["expr"], "for": duration,
                            **{k: v for k, v in rule.items() if k not in ("alert", "expr")}}
            rules.append(rule)
        groups.append({**group, "rules": rules})
    return {**content, "groups": groups}


def _binary(*names: str) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def datasource(scrape_interval: str) -> dict[str, Any]:
    """The provisioned Prometheus datasource, its timeInterval (what $__rate_interval builds on) set
    to the scrape interval the stack's Prometheus uses."""
    doc = yaml.safe_load((REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    for ds in doc["datasources"]:
        ds.setdefault("jsonData", {})["timeInterval"] = scrape_interval
    return doc


def default_exporters() -> list[Exporter]:
    """The demo fleet: a simulated 8-GPU node and a Jetson Orin."""
    return [Exporter("gpu-01"), Exporter("jetson-01", "edge-orin", fleet="edge", site="shop-42")]


@dataclass
class LocalStack:
    """Everything under ``workdir``: configs, rules, data and one log per process run."""

    workdir: Path
    exporters: list[Exporter] = field(default_factory=default_exporters)
    budgets: Path | dict | None = None  # a budgets file, a budgets document, or None for the demo's
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL
    evaluation_interval: str | None = None  # default: the scrape interval
    # Every generated alert's `for:` in the stack's copy of the rules (a demo or a test that wants
    # alerts within seconds); None keeps the generated durations.
    alert_for: str | None = None
    alertmanager_config: dict | None = None  # default: every alert to one receiver with no integration
    grafana: bool = True
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    grafana_port: int = 3000
    procs: dict[str, Proc] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reported: dict[str, int] = field(default_factory=dict)  # process name -> the run whose exit was reported

    def _port(self, port: int, name: str) -> int:
        """``port``, or any free port where it is 0 or taken (said in the notes)."""
        if port and port_free(port):
            return port
        chosen = free_port()
        if port:
            self.notes.append(f"{name}: port {port} is taken (a system service?), using {chosen}")
        return chosen

    def prepare(self) -> None:
        """Write the rules, the Prometheus, Alertmanager and Grafana configs; find the binaries."""
        prom, am = _binary("prometheus"), _binary("prometheus-alertmanager", "alertmanager")
        if prom is None or am is None:
            missing = " and ".join(n for n, b in (("prometheus", prom), ("alertmanager", am)) if b is None)
            raise StackError(f"{missing} not found on PATH. Install: {INSTALL_HINT}")
        w = self.workdir
        (w / "logs").mkdir(parents=True, exist_ok=True)
        try:
            rules = self._write_rules(w / "rules")
        except ValueError as err:  # BudgetError: every problem, each naming the file and key
            raise StackError(str(err)) from err
        self.prometheus_port = self._port(self.prometheus_port, "prometheus")
        self.alertmanager_port = self._port(self.alertmanager_port, "alertmanager")
        py = [sys.executable, "-m", "gpu_carbon_exporter"]
        for e in self.exporters:
            e.port = self._port(e.port, e.name)
            self.procs[e.name] = Proc(e.name, [*py, "--simulate", e.scenario, "--web.listen-address",
                                               f"127.0.0.1:{e.port}", *e.args],
                                      f"http://127.0.0.1:{e.port}/healthz", w / "logs")
        am_cfg = self.alertmanager_config or {"route": {"receiver": "log"}, "receivers": [{"name": "log"}]}
        (w / "alertmanager.yml").write_text(yaml.safe_dump(am_cfg))
        self.procs["alertmanager"] = Proc("alertmanager", [
            am, f"--config.file={w / 'alertmanager.yml'}", f"--storage.path={w / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self.alertmanager_port}", "--cluster.listen-address=",
            f"--web.external-url={self.urls()['alertmanager']}"],
            f"http://127.0.0.1:{self.alertmanager_port}/-/ready", w / "logs")
        (w / "prometheus.yml").write_text(yaml.safe_dump(self._prometheus_config(rules), sort_keys=False))
        self.procs["prometheus"] = Proc("prometheus", [
            prom, f"--config.file={w / 'prometheus.yml'}", f"--storage.tsdb.path={w / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            # the address the stack prints, so alert links (generatorURL) and the UI's own links use it
            f"--web.external-url={self.urls()['prometheus']}"],
            f"http://127.0.0.1:{self.prometheus_port}/-/ready", w / "logs")
        if self.grafana:
            self._prepare_grafana()

    def _write_rules(self, out: Path) -> list[Path]:
        """The generated rules with this stack's budgets, their `for:` set by ``alert_for``."""
        from .mixin import parse_budgets, render, rule_files

        budgets: Any = DEMO_BUDGETS if self.budgets is None else self.budgets
        source = "budgets"
        if not isinstance(budgets, dict):
            source = str(budgets)
            budgets = read_yaml(Path(budgets))
        if isinstance(budgets, dict) and budgets.get("budgets") == []:
            # No budgets: the generator wants some (a `rules --budgets` file is there for them), the
            # stack runs without. The settings beside the empty list still apply: they are parsed
            # with a placeholder budget whose rules are not written.
            files = rule_files(parse_budgets({**budgets, "budgets": [_NO_BUDGET]}, source)[0])
        else:
            files = rule_files(*parse_budgets(budgets, source))
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, content in files.items():
            text = render(content if self.alert_for is None else with_alert_for(content, self.alert_for))
            (out / name).write_text(text)
            paths.append(out / name)
        return paths

    def _prometheus_config(self, rules: list[Path]) -> dict[str, Any]:
        interval = self.evaluation_interval or self.scrape_interval
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rules],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]},
            "scrape_configs": [{"job_name": "gpu-carbon-exporter", "static_configs": [
                {"targets": [f"127.0.0.1:{e.port}"],
                 "labels": {"node": e.name, "fleet": e.fleet, "site": e.site, "cluster": e.cluster}}
                for e in self.exporters]}],
        }

    def _prepare_grafana(self) -> None:
        binary = _binary("grafana", "grafana-server")
        home = Path(os.environ.get("GRAFANA_HOME", "/usr/share/grafana"))
        dashboards = REPO / "grafana" / "dashboards"
        if binary is None or not home.is_dir():
            self.notes.append(GRAFANA_HINT)
            return
        if not (REPO / "grafana" / "provisioning").is_dir():  # an installed package, not a checkout
            self.notes.append("Grafana: its provisioning and dashboards are in the repository's grafana/ folder; "
                              "run the stack from a checkout (scripts/local-stack.sh) to have them")
            return
        w = self.workdir
        prov = w / "grafana" / "provisioning"
        for sub in ("datasources", "dashboards", "plugins", "alerting"):
            (prov / sub).mkdir(parents=True, exist_ok=True)
        (prov / "datasources" / "prometheus.yaml").write_text(yaml.safe_dump(datasource(self.scrape_interval),
                                                                                sort_keys=False))
        provider = yaml.safe_load((REPO / "grafana" / "provisioning" / "dashboards" / "gpu-carbon.yaml").read_text())
        provider["providers"][0]["options"]["path"] = str(dashboards)
        (prov / "dashboards" / "gpu-carbon.yaml").write_text(yaml.safe_dump(provider))
        self.grafana_port = self._port(self.grafana_port, "grafana")
        env = {**os.environ, "PROMETHEUS_URL": f"http://127.0.0.1:{self.prometheus_port}",
               "GF_PATHS_PROVISIONING": str(prov), "GF_PATHS_DATA": str(w / "grafana" / "data"),
               "GF_PATHS_LOGS": str(w / "logs"), "GF_PATHS_PLUGINS": str(w / "grafana" / "plugins"),
               "GF_SERVER_HTTP_ADDR": "127.0.0.1", "GF_SERVER_HTTP_PORT": str(self.grafana_port),
               "GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_ANALYTICS_REPORTING_ENABLED": "false",
               "GF_ANALYTICS_CHECK_FOR_UPDATES": "false"}
        argv = [binary, "server"] if Path(binary).name == "grafana" else [binary]
        self.procs["grafana"] = Proc("grafana", [*argv, f"--homepath={home}"],
                                     f"http://127.0.0.1:{self.grafana_port}/api/health", w / "logs", env=env)

    def start(self) -> "LocalStack":
        """Prepare, then start the exporters, Alertmanager, Prometheus and Grafana, each once it
        answers; on any failure, stop what was started and raise StackError."""
        if not self.procs:
            self.prepare()
        try:
            for proc in self.procs.values():
                proc.start()
        except BaseException:
            self.stop()
            raise
        (self.workdir / "stack.json").write_text(json.dumps(
            {"urls": self.urls(), "pids": {n: p.pid for n, p in self.procs.items()}}, indent=2))
        return self

    def exits(self) -> list[tuple[str, int, Path]]:
        """Processes that exited since the last call, each run once: (name, exit status, its log)."""
        out = []
        for name, proc in self.procs.items():
            if proc.proc is None or self.reported.get(name) == proc.runs:
                continue
            status = proc.proc.poll()
            if status is not None:
                self.reported[name] = proc.runs
                out.append((name, status, proc.logs / f"{name}.{proc.runs}.log"))
        return out

    def urls(self) -> dict[str, str]:
        out = {e.name: f"http://127.0.0.1:{e.port}/metrics" for e in self.exporters}
        out["prometheus"] = f"http://127.0.0.1:{self.prometheus_port}"
        out["alertmanager"] = f"http://127.0.0.1:{self.alertmanager_port}"
        if "grafana" in self.procs:
            out["grafana"] = f"http://127.0.0.1:{self.grafana_port}/dashboards"
        return out

    def stop(self) -> None:
        """Stop everything, Prometheus, Alertmanager and Grafana first (Prometheus flushes its head),
        exporters last (they persist); each set side by side, so a loaded machine waits once, not once
        a process."""
        servers = [self.procs[n] for n in ("grafana", "prometheus", "alertmanager") if n in self.procs]
        for batch in (servers, [p for p in self.procs.values() if p not in servers]):
            threads = [threading.Thread(target=p.stop) for p in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe_exit(name: str, status: int, log: Path, exporter: bool) -> str:
    """The line the stack prints when one of its processes exits."""
    how = f"was killed by signal {-status}" if status < 0 else f"exited with {status}"
    if not exporter:
        return f"{name} {how}: see {log}; the stack cannot go on without it, stopping"
    # Left down, not restarted: the stack is there to show the monitoring, and a dead exporter is
    # what GpuCarbonExporterDown is for; an exporter that cannot start would only crash-loop.
    return (f"{name} {how}: see {log}. It is left down: its target is down in Prometheus and "
            "GpuCarbonExporterDown fires in Alertmanager after the rule's `for:`; the rest of the stack keeps "
            "running. Run it again by hand on the same port to bring the target back, or restart the stack.")


def run(workdir: Path, exporters: list[Exporter], budgets: Path | None, scrape_interval: str,
        grafana: bool, ports: dict[str, int], alert_for: str | None = None) -> int:
    """The CLI: start the stack, print its URLs, wait for Ctrl-C (or SIGTERM), stop it. An exporter
    that exits is reported and left down; Prometheus, Alertmanager or Grafana exiting stops the stack."""
    stack = LocalStack(workdir, exporters, budgets=budgets, scrape_interval=scrape_interval, grafana=grafana,
                       alert_for=alert_for, **ports)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    # Ctrl-C stops the stack even when started with SIGINT ignored (a background job of a script, nohup):
    # Python then keeps the inherited SIG_IGN, and the stack would run on with nobody able to stop it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stack.start()
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("gpu-carbon-exporter local stack (Ctrl-C stops it):", flush=True)
    for name, url in stack.urls().items():
        print(f"  {name:<14} {url}", flush=True)
    for note in stack.notes:
        print(f"  note: {note}", flush=True)
    print(f"  configs, data and logs in {workdir}", flush=True)
    names = {e.name for e in exporters}
    try:
        while not stopping:
            for name, status, log in stack.exits():
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                print(f"{stamp} {describe_exit(name, status, log, name in names)}", file=sys.stderr, flush=True)
                if name not in names:
                    stopping.append(1)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave children behind
    print("stopping…", flush=True)
    stack.stop()
    return 0

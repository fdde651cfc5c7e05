"""Command line: ``serve`` (default), ``check-config``, ``--once``, ``--simulate``, ``--version``."""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from prometheus_client.exposition import generate_latest

from . import __version__
from .address import format_address, parse_listen_address
from .carbon.select import build_provider
from .config import ConfigError, load_config
from .meter import Meter
from .schema import Section
from .sim import BUILTIN as BUILTIN_SCENARIOS
from .sources.base import SourceUnavailable
from .startup import build_meter, build_sources, limit_malloc_arenas, make_collector, make_registry
from .state import StateError, StateStore

if TYPE_CHECKING:
    from .web import WebConfig

log = logging.getLogger("gpu_carbon_exporter")

EXIT_CONFIG, EXIT_NO_SOURCE = 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu-carbon-exporter",
        description="Prometheus exporter for GPU energy, power and carbon emissions.",
        epilog="Subcommands: 'serve' (default), 'check-config FILE', "
               "'rules --out DIR [--budgets FILE] [--prometheusrule FILE]', 'dashboards --out DIR' and "
               "'stack' (a local Prometheus, Alertmanager and Grafana over simulated exporters) and "
               "'report JOB_ID' (what a job cost).")
    p.add_argument("--version", action="version", version=f"gpu-carbon-exporter {__version__}")
    p.add_argument("-c", "--config", metavar="FILE", help="YAML configuration file")
    p.add_argument("--simulate", nargs="?", const="", metavar="SCENARIO",
                   help="simulated devices: a scenario file, or a built-in scenario ("
                        + ", ".join(BUILTIN_SCENARIOS) + "); without a value, the 8-GPU demo node")
    p.add_argument("--once", action="store_true",
                   help="sample for --once.duration seconds, print one exposition to stdout and exit")
    p.add_argument("--once.duration", dest="once_duration", type=float, default=1.0, metavar="SECONDS",
                   help="how long --once samples before printing (default 1; 0 prints the first sample)")
    p.add_argument("--web.listen-address", dest="listen_address", metavar="ADDR",
                   help="host:port to listen on (default :9842)")
    p.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                   help="exporter-toolkit web config (TLS, basic auth)")
    p.add_argument("--log.level", dest="log_level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--state.path", dest="state_path", metavar="FILE", help="counter state file")
    p.add_argument("--carbon.zone", dest="zone", metavar="ZONE", help="carbon zone of this node")
    p.add_argument("--sampling.interval", dest="interval", type=float, metavar="SECONDS",
                   help="seconds between full samples (default 1)")
    return p


def _web_config(cfg: Section) -> WebConfig:
    """The web config named by web.config_file, its errors prefixed with that key."""
    from .web import load_web_config

    try:
        return load_web_config(cfg.web.config_file)
    except ConfigError as err:
        raise ConfigError(f"web.config_file: {err}") from None


def preflight(cfg: dict[str, Any], source: str) -> None:
    """What start-up would refuse beyond the file itself: the web config and its certificates, the
    state path, secrets (environment variables, files) and intensity files. Raises ConfigError."""
    def named(err: Exception) -> ConfigError:
        text = str(err)
        return ConfigError(text if text.startswith(f"{source}:") or text.startswith("/") else f"{source}: {text}")

    try:
        _web_config(cfg)
        if cfg.state.path:
            store = StateStore(cfg.state.path)
            store.check_writable()
            store.close()
        build_provider(cfg.carbon).close()
        build_sources(cfg.sources)  # constructs (secrets, commands) without opening anything
    except ConfigError as err:
        raise named(err) from None


def _flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Command-line flags as config keys, validated with the file's keys (they override it)."""
    flags = [("web", "listen_address", args.listen_address), ("web", "config_file", args.web_config_file),
             ("log", "level", args.log_level), ("state", "path", args.state_path),
             ("carbon", "zone", args.zone), ("sampling", "interval_seconds", args.interval)]
    out: dict[str, dict[str, Any]] = {}
    for section, key, value in flags:
        if value is not None:
            out.setdefault(section, {})[key] = value
    return out


def _setup_logging(level: str) -> None:
    from .logfmt import LogfmtFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def _serve(meter: Meter, cfg: Section) -> int:
    from .web import ExporterServer

    web = _web_config(cfg)
    try:
        host, port = parse_listen_address(cfg.web.listen_address)
    except ValueError as err:
        raise ConfigError(f"web.listen_address: {err}") from None
    meter.start()
    try:
        server = ExporterServer((host, port), make_collector(meter, cfg), web, meter.health,
                                read_timeout_seconds=cfg.web.read_timeout_seconds,
                                max_connections=cfg.web.max_connections)
    except OSError as err:
        meter.stop()
        raise ConfigError(f"web.listen_address: cannot listen on {format_address(host, port)}: "
                          f"{err.strerror or err}") from err
    scheme = "https" if web.ssl_context else "http"
    node = os.environ.get("NODE_NAME")  # Kubernetes: the downward API's node name, for the logs
    log.info("listening on %s://%s/metrics%s", scheme, format_address(host, server.server_address[1]),
             f" on node {node}" if node else "")

    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        if stopping:  # already on the way out: persisting the counters is not cut short
            return
        stopping.append(signum)
        log.info("received signal %d, %sexiting", signum, "persisting counters and " if meter.state else "")
        # Raised in the main thread, which is in serve_forever: its wait returns at once, so the loop
        # needs no polling to see a shutdown (it woke every second for that: 0.01 % of a core).
        raise _Stop

    def reload(_signum: int, _frame: Any) -> None:
        from .web import reload as reload_web

        threading.Thread(target=reload_web, args=(server, cfg.web.config_file, "received SIGHUP"),
                         name="reload", daemon=True).start()

    signal.signal(signal.SIGHUP, reload)
    if cfg.web.config_file:
        from .web import watch_web_config

        threading.Thread(target=watch_web_config, args=(server, cfg.web.config_file, threading.Event()),
                         name="web-config-watch", daemon=True).start()
    try:  # the stop handlers inside: the counters are persisted whenever a stop signal lands
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        server.serve_forever(poll_interval=SERVE_POLL_S)
    except _Stop:
        pass
    finally:
        stopping.append(0)  # however the loop ended: a stop signal now does not cut persisting short
        server.server_close()
        meter.stop()
    return 0


class _Stop(BaseException):
    """A stop signal (SIGTERM, SIGINT) ending the server loop. A BaseException, as KeyboardInterrupt
    is: the loop's ``except Exception`` around accepting a connection (which runs in the main thread)
    must not swallow it."""


# serve_forever wakes this often to look for a shutdown() request; a stop signal raises _Stop instead.
SERVE_POLL_S = 3600.0


ONCE_FETCH_DEADLINE_S = 5.0


def _once(meter: Meter, cfg: dict[str, Any], duration_s: float) -> int:
    """Sample for ``duration_s`` (so counters have something to show), then print one exposition.
    A live intensity provider gets ONCE_FETCH_DEADLINE_S to answer, else its fallback shows."""
    started = time.monotonic()
    meter.start(ready_timeout_s=0.0)
    if not meter.intensity.wait_ready(ONCE_FETCH_DEADLINE_S):
        log.warning("live intensity not fetched within %.0f s: printing the fallback", ONCE_FETCH_DEADLINE_S)
    time.sleep(max(0.0, duration_s - (time.monotonic() - started)))
    meter.sample()
    sys.stdout.write(generate_latest(make_registry(meter, cfg)).decode())
    meter.stop()
    return 0


def _rules(argv: list[str]) -> int:
    """``rules --out DIR [--budgets FILE]``: write the Prometheus rule files generated by the package."""
    from .mixin import BudgetError, write

    p = argparse.ArgumentParser(prog="gpu-carbon-exporter rules",
                                description="Write the Prometheus rule files generated by the package.")
    p.add_argument("--out", metavar="DIR", help="directory to write the rule files into")
    p.add_argument("--budgets", metavar="FILE", help="budgets file (docs/rules.md); adds gpu-carbon-budgets.yml")
    p.add_argument("--prometheusrule", metavar="FILE",
                   help="also write the same rules as one Kubernetes PrometheusRule (prometheus-operator)")
    args = p.parse_args(argv)  # a usage error exits 2, like a bad configuration
    if args.out is None and args.prometheusrule is None:
        p.error("give --out DIR, --prometheusrule FILE, or both")
    try:
        paths = write(args.out, args.budgets, args.prometheusrule)
    except BudgetError as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    for path in paths:
        print(path)
    return 0


def _dashboards(argv: list[str]) -> int:
    """``dashboards --out DIR``: write the Grafana dashboards (needs the `build` extra)."""
    p = argparse.ArgumentParser(prog="gpu-carbon-exporter dashboards",
                                description="Write the Grafana dashboards generated by the package.")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the dashboard JSON files into")
    args = p.parse_args(argv)
    try:
        import grafana_foundation_sdk  # noqa: F401 - the build extra; the package imports it lazily
        from .dashboards import write
    except ImportError as err:
        print(f"error: {err}: install the build extra (pip install 'gpu-carbon-exporter[build]')", file=sys.stderr)
        return EXIT_CONFIG
    for path in write(args.out):
        print(path)
    return 0


def _stack(argv: list[str]) -> int:
    """``stack``: simulated exporters, Prometheus with the rules, Alertmanager and Grafana, until Ctrl-C."""
    from .stack import DEFAULT_SCRAPE_INTERVAL, DURATION, Exporter, default_exporters, run

    def duration(text: str) -> str:
        if not DURATION.match(text):
            raise argparse.ArgumentTypeError(f"expected a Prometheus duration such as 15s or 1m, got {text!r}")
        return text

    def interval(text: str) -> str:
        if re.fullmatch(r"0+[a-z]+", text):  # Prometheus refuses a zero interval
            raise argparse.ArgumentTypeError(f"expected a duration above zero such as 15s, got {text!r}")
        text = duration(text)
        value, unit = re.fullmatch(r"([0-9]+)(ms|s|m|h|d)", text).groups()
        # the "now" rules' irate over now_window (1m) needs two samples in it
        if int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit] > 30:
            raise argparse.ArgumentTypeError(f"at most 30s (the rules' 1-minute 'now' window needs two "
                                             f"scrapes), got {text!r}")
        return text

    p = argparse.ArgumentParser(prog="gpu-carbon-exporter stack",
                                description="Run a local stack from local binaries: simulated exporters, Prometheus "
                                            "with the generated rules, Alertmanager, and Grafana if installed. An "
                                            "exporter that exits is reported and left down (its target goes down "
                                            "and GpuCarbonExporterDown fires); the rest keeps running.")
    p.add_argument("--dir", metavar="DIR", help="configs, data and logs (default: a new directory under /tmp)")
    p.add_argument("--exporter", action="append", metavar="NODE=SCENARIO[@FLEET]",
                   help="a simulated exporter (repeatable); default: gpu-01=demo and jetson-01=edge-orin@edge")
    p.add_argument("--budgets", metavar="FILE", help="budgets file (default: two demo budgets; an empty list: none)")
    p.add_argument("--scrape-interval", default=DEFAULT_SCRAPE_INTERVAL, type=interval, metavar="DURATION",
                   help="Prometheus's scrape and evaluation interval, also the Grafana datasource's timeInterval "
                        "(at most 30s; default %(default)s)")
    p.add_argument("--alert-for", type=duration, metavar="DURATION",
                   help="set every generated alert's `for:` to DURATION in the stack's copy of the rules, and evaluate "
                        "the alert groups at the scrape interval, to see alerts fire within seconds (default: the "
                        "generated durations and intervals)")
    p.add_argument("--no-grafana", action="store_true", help="do not start Grafana even if it is installed")
    p.add_argument("--exporter-port", type=int, default=9842, metavar="PORT",
                   help="the first exporter's port, the next ones count up (default %(default)s); 0: any free ports")
    for name, port in (("prometheus", 9090), ("alertmanager", 9093), ("grafana", 3000)):
        p.add_argument(f"--{name}-port", type=int, default=port, metavar="PORT",
                       help="default %(default)s; 0 or taken: any free port")
    args = p.parse_args(argv)
    exporters = []
    for spec in args.exporter or []:
        node, sep, rest = spec.partition("=")
        scenario, _, fleet = rest.partition("@")
        if not sep or not node or not scenario:
            p.error(f"--exporter {spec!r}: expected NODE=SCENARIO[@FLEET]")
        exporters.append(Exporter(node, scenario, fleet=fleet or "datacenter"))
    if not exporters:
        exporters = default_exporters()
    for i, e in enumerate(exporters):
        e.port = args.exporter_port + i if args.exporter_port else 0
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="gpu-carbon-stack-"))
    ports = {f"{n}_port": getattr(args, f"{n}_port") for n in ("prometheus", "alertmanager", "grafana")}
    return run(workdir, exporters, Path(args.budgets) if args.budgets else None, args.scrape_interval,
               not args.no_grafana, ports, alert_for=args.alert_for)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "serve"
    if argv and argv[0] in ("serve", "check-config", "rules", "dashboards", "stack", "report"):
        command = argv.pop(0)
    if command == "rules":
        return _rules(argv)
    if command == "dashboards":
        return _dashboards(argv)
    if command == "stack":
        return _stack(argv)
    if command == "report":
        from .report.cli import main as report_main

        return report_main(argv)
    if command == "check-config":
        if len(argv) != 1:
            print("usage: gpu-carbon-exporter check-config FILE", file=sys.stderr)
            return EXIT_CONFIG
        try:
            preflight(load_config(argv[0]), argv[0])
        except (ConfigError, StateError) as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"{argv[0]}: OK")
        return 0
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config, _flag_overrides(args))
        _setup_logging(cfg.log.level)
        if args.once and not 0 <= args.once_duration <= 3600:  # NaN fails too
            raise ConfigError("--once.duration: must be in [0, 3600] seconds")
        if cfg.state.path:
            StateStore(cfg.state.path).check_writable()
        limit_malloc_arenas()  # before the meter's and the server's threads start
        meter, _ = build_meter(cfg, args.simulate)
        if args.once:
            return _once(meter, cfg, args.once_duration)
        return _serve(meter, cfg)
    except (ConfigError, StateError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except SourceUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NO_SOURCE
    except (ValueError, OSError) as err:  # scenario errors, bad listen address, port in use
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG

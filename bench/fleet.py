"""Fleet-scale benchmark: what 1 000 and 10 000 GPUs cost a Prometheus server.

One emulator process serves many 8-GPU node targets on one port, each at its
own path (Prometheus's ``__metrics_path__``), with the exact metric families
and label sets of our exporter (rendered once from the real collector over a
simulated 8-GPU node, then re-valued per scrape). A real Prometheus scrapes
them every 15 s; we read its head series, RSS and ingestion rate. With ``--rules`` it also
evaluates the generated recording rules, alerts and the example budgets (every target carries
the target labels the rules need: node, site, fleet, cluster) and we read each rule group's
evaluation time and the series the rules add.

Usage: python bench/fleet.py [--gpus 1000 10000] [--seconds 120] [--rules]
"""
from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import os
import shutil
import subprocess

from common import free_port, query, wait_http

from gpu_carbon_exporter.startup import build_meter, make_registry
from gpu_carbon_exporter.config import parse_config
from prometheus_client.exposition import generate_latest

GPUS_PER_NODE = 8


def node_template() -> list[tuple[str, float]]:
    """(line prefix, value) pairs of one real exposition: the demo node (8 H100s, 2 CPU packages
    through RAPL, its Slurm jobs) with the production defaults."""
    cfg = parse_config({})
    meter, _ = build_meter(cfg, "")
    meter.open()
    for _ in range(3):
        meter.sample()
    text = generate_latest(make_registry(meter, cfg)).decode()
    meter.stop()
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            out.append((line, float("nan")))
        else:
            prefix, value = line.rsplit(" ", 1)
            out.append((prefix, float(value)))
    return out


class Fleet(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, port: int, template: list[tuple[str, float]]) -> None:
        self.template = template
        super().__init__(("127.0.0.1", port), Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        node = int(re.sub(r"\D", "", self.path) or 0)
        t = time.time()
        lines = []
        for prefix, value in self.server.template:
            prefix = prefix.replace('job_id="', f'job_id="n{node}-')  # each node runs its own jobs
            if value != value:  # comment line
                lines.append(prefix)
            elif "_total" in prefix:
                lines.append(f"{prefix} {value + t * (1 + node % 7):.3f}")  # counters keep rising
            else:
                lines.append(f"{prefix} {value}")
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def rule_files(tmp: Path) -> list[Path]:
    """The generated rules, alerts and the example budgets' rules, written under ``tmp``."""
    from gpu_carbon_exporter.mixin import write

    return write(tmp / "rules", Path(__file__).resolve().parent.parent / "prometheus" / "budgets.example.yml")


def run(gpus: int, seconds: float, template, rules: bool = False) -> dict:
    nodes = gpus // GPUS_PER_NODE
    port = free_port()
    server = Fleet(port, template)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-"))
    targets = "".join(f"      - targets: ['127.0.0.1:{port}']\n        labels: {{__metrics_path__: /node/{n}, "
                      f"instance: node-{n}, node: node-{n}, site: site-{n % 4}, fleet: datacenter, cluster: c1}}\n"
                      for n in range(nodes))
    files = "".join(f"  - {p}\n" for p in rule_files(tmp)) if rules else ""
    cfg = ("global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n"
           + (f"rule_files:\n{files}" if files else "") + "scrape_configs:\n"
           "  - job_name: gpu-carbon\n    static_configs:\n" + targets
           + "  - job_name: self\n    static_configs:\n      - targets: ['{self}']\n")
    return _measure(tmp, cfg, seconds, nodes, server)


def _measure(tmp: Path, cfg: str, seconds: float, nodes: int, server: Fleet) -> dict:
    port = free_port()
    (tmp / "prometheus.yml").write_text(cfg.replace("{self}", f"127.0.0.1:{port}"))
    proc = subprocess.Popen([shutil.which("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=open(tmp / "prometheus.log", "w"), stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/-/ready")
        time.sleep(seconds)
        def val(promql: str) -> float:
            result = query(base, promql)
            return float(result[0]["value"][1]) if result else float("nan")

        groups = {r["metric"]["rule_group"].split(";")[-1]: float(r["value"][1])
                   for r in query(base, "prometheus_rule_group_last_duration_seconds")}
        return {
            "groups": groups,
            "rule_series": val('count({__name__=~"[a-z]+:gpu_carbon_.+:.+"})'),
            "nodes": nodes,
            "targets_up": val('sum(up{job="gpu-carbon"})'),
            "head_series": val("prometheus_tsdb_head_series"),
            "rss_mb": val('process_resident_memory_bytes{job="self"}') / 1e6,
            "samples_per_s": val("rate(prometheus_tsdb_head_samples_appended_total[1m])"),
            "cpu_pct": 100 * val('rate(process_cpu_seconds_total{job="self"}[1m])'),
            # the targets' own series (recording rules keeping the job label, and ALERTS, are not theirs)
            "series_per_node": val('count({job="gpu-carbon", __name__!~".*:.*|ALERTS.*"}) '
                                   '/ count(up{job="gpu-carbon"})'),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.shutdown()
        server.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpus", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--rules", action="store_true", help="also evaluate the generated rules and report their cost")
    args = ap.parse_args()
    template = node_template()
    print("| GPUs | targets (8 GPUs each) | targets up | series per node | head series | "
          "Prometheus RSS | samples/s ingested | Prometheus CPU |")
    print("|---|---|---|---|---|---|---|---|")
    runs = []
    for gpus in args.gpus:
        r = run(gpus, args.seconds, template, args.rules)
        runs.append((gpus, r))
        print(f"| {gpus} | {r['nodes']} | {r['targets_up']:.0f} | {r['series_per_node']:.0f} | "
              f"{r['head_series']:.0f} | {r['rss_mb']:.0f} MB | {r['samples_per_s']:.0f} | "
              f"{r['cpu_pct']:.1f} % of a core |", flush=True)
    if args.rules:
        names = sorted({g for _, r in runs for g in r["groups"]})
        print("\n| GPUs | series the rules add | " + " | ".join(f"`{g}` (s)" for g in names) + " |")
        print("|---|---|" + "---|" * len(names))
        for gpus, r in runs:
            cells = " | ".join(f"{r['groups'].get(g, float('nan')):.3f}" for g in names)
            print(f"| {gpus} | {r['rule_series']:.0f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()

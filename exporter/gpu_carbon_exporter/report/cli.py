"""``gpu-carbon-exporter report JOB_ID [--compare OTHER ...]``: what a job cost, for its owner."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..names import WH_PER_KWH
from .collect import collect
from .local import from_exporter
from .model import JobReport
from .prom import Prometheus, ReportError, read_secret
from . import render

FORMATS = ("text", "markdown", "html", "json")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu-carbon-exporter report",
        description="What a job cost: energy, emissions, water, per node and GPU, a disclosure paragraph, and "
                    "comparisons per unit of work. Exit 0: a report (perhaps partial); 1: no such job or no data; "
                    "2: bad arguments; 3: the data source failed.")
    p.add_argument("job", metavar="JOB_ID", help="the job (several runs of one variant: ID,ID,...)")
    p.add_argument("--compare", nargs="+", metavar="JOB_ID", default=[],
                   help="other jobs to compare with (each ID,ID,... for several runs of a variant)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prometheus", metavar="URL", default="http://localhost:9090", help="default %(default)s")
    src.add_argument("--exporter", metavar="URL", help="read one node's exporter /metrics instead (totals only, "
                     "while the job is still exposed there)")
    p.add_argument("--cluster", help="the job's cluster, where job ids repeat across clusters")
    p.add_argument("--since", type=float, default=30.0, metavar="DAYS", help="how far back to look (default 30)")
    p.add_argument("--format", choices=FORMATS, default="text", help="for standard output (default text)")
    p.add_argument("--out", metavar="DIR", help="also write report.{txt,md,html,json} and the plots (PNG, SVG) here")
    p.add_argument("--work", type=float, metavar="N", help="units of work the job did (overrides what it declared; "
                   "with --compare, for every job)")
    p.add_argument("--work-unit", metavar="UNIT", help="what --work counts, e.g. tokens, images, samples")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per request (default 30)")
    auth = p.add_argument_group("Prometheus connection (as promtool)")
    auth.add_argument("--basic-auth-user", metavar="USER")
    auth.add_argument("--basic-auth-password-file", metavar="FILE")
    auth.add_argument("--bearer-token-file", metavar="FILE")
    auth.add_argument("--ca-file", metavar="FILE")
    auth.add_argument("--cert-file", metavar="FILE")
    auth.add_argument("--key-file", metavar="FILE")
    auth.add_argument("--insecure-skip-verify", action="store_true")
    return p


def main(argv: list[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    if (args.work is None) != (args.work_unit is None):
        p.error("--work and --work-unit go together")
    if args.work is not None and (args.work <= 0 or args.work != args.work or args.work == float("inf")):
        p.error("--work: expected a number above 0")
    if not 0 < args.since <= 3650:
        p.error("--since: expected days in (0, 3650]")
    try:
        variants = [_variant(args, spec) for spec in [args.job, *args.compare]]
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    out = Path(args.out) if args.out else None
    try:
        if len(variants) == 1 and len(variants[0].runs) == 1:
            _single(variants[0].runs[0], args.format, out)
        else:
            _comparison(variants, args.format, out)
    except OSError as err:
        print(f"error: --out {out}: {err.strerror or err}", file=sys.stderr)
        return 2
    return 0


def _variant(args: argparse.Namespace, spec: str) -> render.Variant:
    ids = [i for i in spec.split(",") if i]
    if not ids:
        raise ReportError(f"{spec!r}: expected a job id", 2)
    runs = [_one(args, i) for i in ids]
    return render.Variant(spec if len(ids) == 1 else f"{ids[0]}…(×{len(ids)})", runs)


def _one(args: argparse.Namespace, job_id: str) -> JobReport:
    if args.exporter:
        report = from_exporter(args.exporter, job_id, timeout=args.timeout)
    else:
        prom = Prometheus(args.prometheus, timeout=args.timeout, username=args.basic_auth_user,
                          password=read_secret(args.basic_auth_password_file),
                          bearer_token=read_secret(args.bearer_token_file), ca_file=args.ca_file,
                          cert_file=args.cert_file, key_file=args.key_file, insecure=args.insecure_skip_verify)
        report = collect(prom, job_id, args.cluster, since_s=args.since * 86400)
    if args.work is not None:
        report.work, report.work_source = {args.work_unit: args.work}, "command line"
    return report


def _single(r: JobReport, fmt: str, out: Path | None) -> None:
    images: dict = {}
    if out is not None:
        from . import plots

        out.mkdir(parents=True, exist_ok=True)
        if plots.available():
            images = plots.job_plots(r, out)
        else:
            print("note: plots need matplotlib: pip install 'gpu-carbon-exporter[report]'", file=sys.stderr)
        (out / "report.txt").write_text(render.text(r))
        (out / "report.md").write_text(render.markdown(r, {k: v.name for k, v in images.items()}))
        (out / "report.html").write_text(render.html_report(r, {k: plots.data_uri(v) for k, v in images.items()}))
        (out / "report.json").write_text(render.json_report(r))
    writers = {"text": render.text, "markdown": render.markdown, "html": render.html_report, "json": render.json_report}
    sys.stdout.write(writers[fmt](r))


def _comparison(variants: list[render.Variant], fmt: str, out: Path | None) -> None:
    if out is not None:
        from . import plots

        out.mkdir(parents=True, exist_ok=True)
        images: dict = {}
        if plots.available():
            unit = render.common_unit(variants)
            per_unit = [v.per_unit(unit) for v in variants] if unit else None
            images = plots.comparison_plot(
                [v.name for v in variants], [sum(r.kwh for r in v.runs) / len(v.runs) for v in variants],
                [sum(r.grams for r in v.runs) / len(v.runs) for v in variants],
                [pu[0] * WH_PER_KWH for pu in per_unit] if per_unit and all(per_unit) else None, unit, out)
        (out / "comparison.txt").write_text(render.comparison_text(variants))
        (out / "comparison.html").write_text(render.comparison_html(variants, {k: plots.data_uri(v)
                                                                               for k, v in images.items()}))
        (out / "comparison.json").write_text(render.comparison_json(variants))
    writers = {"text": render.comparison_text, "markdown": render.comparison_markdown,
               "html": render.comparison_html, "json": render.comparison_json}
    sys.stdout.write(writers[fmt](variants))

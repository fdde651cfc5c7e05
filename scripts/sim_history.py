"""Writes a simulated scenario's history as OpenMetrics with timestamps, ending now, for
`promtool tsdb create-blocks-from openmetrics` (docs/rules.md#backfilling).

Usage: python scripts/sim_history.py SCENARIO.yaml --days 31 [--step 60] [--label node=a ...] --out FILE
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from gpu_carbon_exporter.sim.history import render_history
from gpu_carbon_exporter.sim.scenario import load_scenario


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", help="a scenario file (docs/scenario.md); its t = 0 is --days ago")
    ap.add_argument("--days", type=float, required=True)
    ap.add_argument("--step", type=float, default=60.0, help="seconds between samples (finer than the rules' tile)")
    ap.add_argument("--label", action="append", default=[], metavar="NAME=VALUE",
                    help="a target label to add to every series (node, site, fleet, cluster, job, instance)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    end_s = args.days * 86400
    epoch = (time.time() // args.step) * args.step - end_s
    target = dict(item.split("=", 1) for item in args.label)
    Path(args.out).write_text(render_history(load_scenario(args.scenario), epoch, end_s, args.step, target))


if __name__ == "__main__":
    main()

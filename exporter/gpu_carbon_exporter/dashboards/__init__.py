"""Grafana dashboards generated from Python (grafana-foundation-sdk, a build and test dependency:
the `build` and `test` extras), from the same package as the rules they read.

``gpu-carbon-exporter dashboards --out DIR`` writes them; tests/test_dashboards.py fails when a
committed file under ``grafana/dashboards/`` differs from what this package writes.
"""
from __future__ import annotations

import json
from pathlib import Path


def dashboards() -> dict[str, dict]:
    """File name -> dashboard JSON model."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    from . import budgets, compare, edge, fleet, job, node

    out = {}
    for module in (fleet, edge, job, compare, budgets, node):
        out[f"{module.UID}.json"] = json.loads(json.dumps(module.build().build(), cls=JSONEncoder))
    return out


def render(model: dict) -> str:
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in dashboards().items():
        paths.append(out / name)
        paths[-1].write_text(render(model))
    return paths

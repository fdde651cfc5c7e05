"""Writes exporter/gpu_carbon_exporter/carbon/data/iso3166.json from pycountry (a build-only
dependency, the `build` extra): ISO 3166-1 alpha-2 -> alpha-3 and country names, so that
`--carbon.zone DE`, `de` and `deu` all mean DEU. tests/test_zones.py checks the committed file
equals this script's output.

Usage: python scripts/gen_iso3166.py [--check]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "exporter/gpu_carbon_exporter/carbon/data/iso3166.json"


def table() -> str:
    import pycountry

    countries = {c.alpha_2: {"alpha_3": c.alpha_3, "name": c.name} for c in pycountry.countries}
    data = {"source": f"ISO 3166-1 via pycountry {pycountry.__version__}", "countries": dict(sorted(countries.items()))}
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == table() else 1)
    OUT.write_text(table())

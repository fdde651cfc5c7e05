"""names.py, the one home of family names, recording-rule names read outside the generator, and
units: held to the golden exposition, docs/metrics.md and the generated rules, so that a renamed
family or rule cannot drift from it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from gpu_carbon_exporter import names
from gpu_carbon_exporter.kinds import kinds
from gpu_carbon_exporter.mixin import load_budgets, rule_files

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter" / "gpu_carbon_exporter"
GOLDEN = Path(__file__).parent / "fixtures" / "golden.prom"
SUFFIXES = {"up": "up", "power": "power_watts", "energy": "energy_joules_total",
            "emissions": "emissions_grams_total", "utilization": "gpu_utilization_ratio"}


def literals() -> set[str]:
    """Every string literal written in names.py (what grep finds there)."""
    tree = ast.parse((PACKAGE / "names.py").read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def golden_families() -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", GOLDEN.read_text(), re.M))


def documented_kinds() -> set[str]:
    """The first column of docs/metrics.md's table of device kinds."""
    table = (ROOT / "docs" / "metrics.md").read_text().split("\n| kind |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", table, re.M))


def documented_families() -> set[str]:
    """Every backticked family of docs/metrics.md, `gpu_carbon_<kind>_…` expanded for its kinds, and
    the `…_emissions_grams_total` half of the `A` / `…_emissions_grams_total` rows."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    out = set(re.findall(r"`(gpu_carbon_[a-z0-9_]+)[`{]", text))
    for template in re.findall(r"`(gpu_carbon_<kind>_[a-z0-9_]+)", text):
        out |= {template.replace("<kind>", k) for k in documented_kinds()}
    for energy in re.findall(r"`(gpu_carbon_[a-z0-9_]+)_energy_joules_total` / `…_emissions_grams_total`", text):
        out.add(f"{energy}_emissions_grams_total")
    return out


def family_constants() -> dict[str, str]:
    return {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, str) and v.startswith("gpu_carbon_")}


def test_every_family_of_the_golden_exposition_is_a_literal_in_names():
    missing = golden_families() - literals()
    assert not missing, f"add to names.py: {sorted(missing)}"


def test_every_family_constant_is_exposed_or_documented():
    known = golden_families() | documented_families()
    stale = {k: v for k, v in family_constants().items() if v not in known}
    assert not stale, stale
    for constant, value in family_constants().items():  # the naming rule of the module's docstring
        assert constant == value.removeprefix("gpu_carbon_").upper(), constant


def test_device_families_are_the_documented_kinds_and_the_exposed_families():
    # every built-in kind (kinds.py's registry; a kind a plug-in registers is named at run time)
    assert set(names.DEVICE_FAMILIES) == documented_kinds() | {"gpu"} == {k.name for k in kinds()}
    exposed = golden_families()
    for kind, fam in names.DEVICE_FAMILIES.items():
        if kind != "gpu":  # named as a plug-in's kind is at run time (the GPU's utilisation is not)
            assert fam == names.DeviceFamilies(**{f: f"gpu_carbon_{kind}_{s}" for f, s in SUFFIXES.items()}), kind
            assert {getattr(fam, field) for field in SUFFIXES} <= literals(), kind
        for field, suffix in SUFFIXES.items():  # every family the golden exposition has of a kind is its entry's
            like = f"gpu_carbon_{kind}_{suffix}"
            if like in exposed:
                assert getattr(fam, field) == like, (kind, field)
        if fam.up in exposed:  # vice versa: a kind the exposition has exposes the table's families
            assert {fam.up, fam.power, fam.energy} <= exposed, kind
    assert names.kind_families("gpu") == names.DEVICE_FAMILIES["gpu"]
    assert names.kind_families("lidar").energy == "gpu_carbon_lidar_energy_joules_total"


def test_every_rule_name_is_recorded_by_the_generator():
    files = rule_files(*load_budgets(ROOT / "prometheus" / "budgets.example.yml"))
    records = {r["record"] for c in files.values() for g in c["groups"] for r in g["rules"] if "record" in r}
    rules = {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, str) and ":" in v}
    assert len(rules) > 20
    for constant, name in rules.items():
        level, metric, ops = name.split(":")
        assert constant == f"{level}__{metric.removeprefix('gpu_carbon_')}__{ops}".upper(), constant
        # the whole name, or a name that the reader completes with a window
        assert name in records or any(re.fullmatch(re.escape(name) + r"\d+[smhd]", r) for r in records), name


def test_units_are_defined_once():
    definition = re.compile(r"^\s*(?:J_PER_KWH|JOULES_PER_KWH|KWH|GRAMS_PER_KG|SECONDS_PER_HOUR|MILLI|PERCENT|MEGA)"
                            r"\s*(?::[^=]+)?=", re.M)
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for spelling in ("3.6e6", "3.6e+06", "3600000", "3_600_000"):
            assert spelling not in text, f"{path.relative_to(ROOT)}: {spelling} (use names.JOULES_PER_KWH)"
        if path.name != "names.py":
            assert not definition.search(text), f"{path.relative_to(ROOT)}: a unit defined outside names.py"


def test_no_family_name_is_built_at_run_time():
    """Families are named by a literal (or a constant of names.py), never by a formatted string, so
    that grep finds every one; names.kind_families is the one exception (a plug-in's kind). (The
    collector names every family by a constant of names.py, never a string of its own.)"""
    built = re.compile(r"(?:MetricFamily|_gauge|_counter)\(\s*f[\"']")
    spelled = re.compile(r"(?:MetricFamily|_gauge|_counter)\(\s*[\"']")
    assert not spelled.search((PACKAGE / "collector.py").read_text()), "collector.py: a family named by a literal"
    for path in PACKAGE.rglob("*.py"):
        assert not built.search(path.read_text()), path.relative_to(ROOT)

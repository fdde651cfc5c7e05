"""The budgets file: limits and units, and one clear error per problem (file, key, reason), exit 2."""
import pytest
import yaml

from gpu_carbon_exporter.cli import main
from gpu_carbon_exporter.mixin import BudgetError, parse_budgets

GOOD = {"name": "b", "scope": "team", "match": "nlp", "limit": "50 kg", "window": "7d"}


def one(**changes) -> dict:
    return {"budgets": [{**GOOD, **changes}]}


@pytest.mark.parametrize("limit, quantity, value", [
    ("300 g", "emissions", 300.0), ("50 kg", "emissions", 50_000.0), ("2.5 t", "emissions", 2.5e6),
    ("1 tCO2e", "emissions", 1e6), ("120 kWh", "energy", 120.0), ("1.5 MWh", "energy", 1500.0),
    ("7e2 g", "emissions", 700.0)])
def test_limits_are_converted_to_grams_or_kwh(limit, quantity, value):
    _, (b,) = parse_budgets(one(limit=limit))
    assert (b.quantity, b.limit) == (quantity, pytest.approx(value))


def test_defaults_and_per_budget_warning_share():
    s, (a, b) = parse_budgets({"settings": {"warning_share": 0.7},
                               "budgets": [GOOD, {**GOOD, "name": "c", "warning_share": 0.95}]})
    assert (a.warning_share, b.warning_share, s.warning_share) == (0.7, 0.95, 0.7)
    assert a.labels() == {"budget": "b", "scope": "team", "scope_value": "nlp", "team": "nlp", "window": "7d",
                          "quantity": "emissions"}
    _, (j,) = parse_budgets(one(scope="job", match=4711))
    assert j.labels()["job_id"] == "4711"


@pytest.mark.parametrize("changes, key, reason", [
    ({"scope": "department"}, "budgets[0].scope", "unknown scope 'department'"),
    ({"limit": "-5 kg"}, "budgets[0].limit", "the limit must be above 0, got -5"),
    ({"limit": "0 kg"}, "budgets[0].limit", "the limit must be above 0"),
    ({"limit": "5 lb"}, "budgets[0].limit", "unknown unit 'lb'"),
    ({"limit": 50}, "budgets[0].limit", "expected a number and a unit"),
    ({"window": "2w"}, "budgets[0].window", "unknown window '2w'"),
    ({"name": "has space"}, "budgets[0].name", "expected 1-64 letters"),
    ({"match": ""}, "budgets[0].match", "label value"),
    ({"warning_share": 1.5}, "budgets[0].warning_share", "between 0 and 1"),
    ({"colour": "red"}, "budgets[0].colour", "unknown key"),
])
def test_each_bad_budget_gets_its_own_error(changes, key, reason):
    with pytest.raises(BudgetError) as err:
        parse_budgets(one(**changes), "b.yml")
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"b.yml: {key}: ") and reason in lines[0], lines


def test_duplicate_names_and_bad_settings_are_reported_together():
    doc = {"settings": {"warning_share": 2, "long_interval": "5m", "colour": 1},
           "budgets": [GOOD, dict(GOOD), {**GOOD, "name": "x", "scope": "galaxy", "window": "1y"}]}
    with pytest.raises(BudgetError) as err:
        parse_budgets(doc, "b.yml")
    lines = str(err.value).splitlines()
    assert any("budgets[1].name: duplicate budget name 'b'" in x for x in lines)
    assert any("settings.warning_share:" in x for x in lines)
    assert any("settings.long_interval: must be under Prometheus's 5-minute lookback" in x for x in lines)
    assert any("settings.colour: unknown key" in x for x in lines)
    assert any("budgets[2].scope" in x for x in lines) and any("budgets[2].window" in x for x in lines)
    assert len(lines) == 6 and all(x.startswith("b.yml: ") for x in lines)


def test_the_rules_command_prints_every_error_and_exits_2(tmp_path, capsys):
    path = tmp_path / "budgets.yml"
    path.write_text(yaml.safe_dump({"budgets": [{**GOOD, "limit": "0 kg"}, {**GOOD, "name": "c", "scope": "x"}]}))
    assert main(["rules", "--budgets", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith(f"error: {path}: budgets[") for line in err)
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize("text, reason", [("budgets: [", "invalid YAML"), ("[]", "expected a mapping"),
                                          ("budgets: []", "budgets: expected a non-empty list")])
def test_unreadable_files_are_one_error(tmp_path, capsys, text, reason):
    path = tmp_path / "budgets.yml"
    path.write_text(text)
    assert main(["rules", "--budgets", str(path), "--out", str(tmp_path / "out")]) == 2
    assert reason in capsys.readouterr().err
    assert main(["rules", "--budgets", str(tmp_path / "missing.yml"), "--out", str(tmp_path)]) == 2

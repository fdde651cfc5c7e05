"""Zone names people type: alpha-2 and alpha-3 in any case, nearest codes on a typo."""
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_carbon_exporter.cli import main
from gpu_carbon_exporter.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("typed", ["DE", "de", "DEU", "deu", "Deu"])
def test_alpha_2_and_alpha_3_in_any_case_mean_the_same_zone(typed):
    assert parse_config({"carbon": {"zone": typed}})["carbon"]["zone"] == "DEU"


def test_the_label_is_normalised(capsys):
    assert main(["--simulate", "--once", "--once.duration", "0", "--carbon.zone", "fr"]) == 0
    out = capsys.readouterr().out
    assert 'gpu_carbon_grid_intensity_grams_per_kwh{zone="FRA"}' in out


@pytest.mark.parametrize("typed, hint", [
    ("DEX", "did you mean DEU (Germany)"),
    ("Germany", "DEU (Germany)"),
    ("US-CAL-CISO", "looks like an Electricity Maps zone id"),
    ("Atlantis", "not an ISO 3166 alpha-2 or alpha-3 country code"),
])
def test_unknown_zones_get_a_hint(typed, hint):
    with pytest.raises(ConfigError) as err:
        parse_config({"carbon": {"zone": typed}}, "x.yml")
    assert str(err.value).startswith("x.yml: carbon.zone: ") and hint in str(err.value)


def test_country_provider_accepts_alpha_2():
    cfg = parse_config({"carbon": {"zone": "site", "zones": {"site": {"provider": "country", "country": "se"}}}})
    assert cfg["carbon"]["zones"]["site"]["country"] == "SWE"


def test_bundled_iso_table_is_what_the_generator_writes():
    # pycountry (pinned) is in the test extra: this runs everywhere the suite runs
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_iso3166.py"), "--check"])
    assert out.returncode == 0, "run: python scripts/gen_iso3166.py"


def test_a_defined_zone_wins_over_the_country_table_whatever_its_case():
    cfg = parse_config({"carbon": {"zone": "DE", "zones": {"de": {"provider": "static", "g_per_kwh": 100}}}})
    assert cfg["carbon"]["zone"] == "de"


def test_an_unquoted_norway_is_refused_with_a_hint(tmp_path):
    from gpu_carbon_exporter.config import load_config

    f = tmp_path / "c.yml"
    f.write_text("carbon:\n  zone: 'NO'\n  zones:\n    NO: {provider: static, g_per_kwh: 10}\n")
    with pytest.raises(ConfigError, match="a zone name must be a string; quote it"):
        load_config(f)


def test_an_electricity_maps_id_is_explained_once():
    with pytest.raises(ConfigError) as err:
        parse_config({"carbon": {"zone": "us-cal-ciso"}}, "x.yml")
    assert str(err.value).count("carbon.zones") == 1

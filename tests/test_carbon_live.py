"""Live intensity providers against real HTTP servers on 127.0.0.1 serving the documented shapes."""
import base64
import dataclasses
import datetime as dt
import logging
import time

import pytest

from gpu_carbon_exporter.carbon.live import PollingIntensity
from gpu_carbon_exporter.carbon.select import build_provider
from gpu_carbon_exporter.carbon.webapis import ElectricityMaps, UKCarbonIntensity, WattTime
from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.config import ConfigError, parse_config

from fakeapi import FakeApi, Trickle, sequence, slow

TOKEN = "em-secret-token-123"


def iso(t: float, fmt: str = "%Y-%m-%dT%H:%M:%S.000Z") -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime(fmt)


@pytest.fixture
def api():
    server = FakeApi()
    yield server
    server.close()


def polling(source, **kw):
    kw = {"timeout_seconds": 0.5, "retries": 0, "backoff_s": 0.01, **kw}
    return PollingIntensity("Z", source, StaticIntensity("Z", 333.0), **kw)


def em_latest(value=412, at=None):
    return 200, {}, {"zone": "DE", "carbonIntensity": value, "datetime": iso(at or time.time() - 600),
                     "updatedAt": iso(time.time()), "emissionFactorType": "lifecycle", "isEstimated": True}


def nested(depth):
    return [nested(depth - 1)] if depth else 1


def em_source(api, **kw):
    return ElectricityMaps(TOKEN, zone="DE", base_url=api.url, **kw)


# -- Electricity Maps --------------------------------------------------------
def test_electricitymaps_latest_and_forecast(api):
    now = time.time()
    api.routes["/v3/carbon-intensity/latest"] = em_latest(412)
    api.routes["/v3/carbon-intensity/forecast"] = (200, {}, {"zone": "DE", "forecast": [
        {"carbonIntensity": 300, "datetime": iso(now + 3600)},
        {"carbonIntensity": 150, "datetime": iso(now + 7200)},
        {"carbonIntensity": 500, "datetime": iso(now + 10800)}], "updatedAt": iso(now)})
    p = polling(em_source(api, forecast=True, emission_factor_type="direct"), window_hours=1.0,
                max_age_seconds=86400)
    assert p.poll()
    req = api.hits("/v3/carbon-intensity/latest")[0]
    assert req["headers"]["auth-token"] == TOKEN
    assert req["query"] == {"zone": ["DE"], "emissionFactorType": ["direct"]}
    i = p.current(time.time())
    assert (i.g_per_kwh, i.source, i.signal, i.fallback) == (412, "electricitymaps", "average", False)
    assert p.current(now + 7300).g_per_kwh == 150
    fc = p.forecast(now)
    assert fc.min_g_per_kwh == 150 and fc.best_window_in_s == pytest.approx(7200, abs=2)
    assert 150 < fc.mean_g_per_kwh < 500


def test_electricitymaps_by_coordinates(api):
    api.routes["/v3/carbon-intensity/latest"] = em_latest(99)
    p = polling(ElectricityMaps(TOKEN, lat=48.1, lon=11.6, base_url=api.url))
    assert p.poll() and p.current(time.time()).g_per_kwh == 99
    assert api.requests[0]["query"]["lat"] == ["48.1"] and "zone" not in api.requests[0]["query"]


@pytest.mark.parametrize("reply, reason", [
    ((200, {}, b"{not json"), "malformed"),
    ((200, {}, {"zone": "DE", "datetime": "2026-01-01T00:00:00Z"}), "missing_field"),
    ((200, {}, {"carbonIntensity": "high", "datetime": "2026-01-01T00:00:00Z"}), "malformed"),
    (em_latest(-5), "out_of_range"),
    (em_latest(9000), "out_of_range"),
    (em_latest(300, at=time.time() - 30 * 86400), "stale"),
    ((503, {}, {"error": "maintenance"}), "http_5xx"),
    ((401, {}, {"error": "invalid token"}), "auth"),
    ((200, {}, b"[" * 100_000 + b"]" * 100_000), "malformed"),  # nested past the parser's recursion limit
    ((200, {}, {**em_latest(300)[2], "x": nested(40)}), "malformed"),  # under it, past our bound
    ((200, {}, {**em_latest(300)[2], "pad": "x" * (9 * 2**20)}), "malformed"),  # over 8 MiB
    (em_latest(300, at=time.time() + 30 * 86400), "out_of_range"),  # stamped a month ahead
])
def test_bad_input_falls_back_with_an_error_count(api, reply, reason, caplog):
    api.routes["/v3/carbon-intensity/latest"] = reply
    p = polling(em_source(api))
    with caplog.at_level(logging.WARNING):
        assert p.poll() is False
    i = p.current(time.time())
    assert (i.g_per_kwh, i.source, i.fallback) == (333.0, "static", True)
    stats = p.stats()
    assert stats.errors == {reason: 1} and stats.successes == 0 and stats.requests == 1
    assert f"[{reason}]" in caplog.text
    assert TOKEN not in caplog.text  # secrets never logged


def test_timeout_and_slow_response_never_block_readers(api):
    api.routes["/v3/carbon-intensity/latest"] = slow(1.5, em_latest(200))
    p = polling(em_source(api), timeout_seconds=0.3, poll_interval_seconds=60)
    p.start()
    i = p.current(time.time())
    assert i.fallback and not p.stats().errors  # served from the fallback while the request is still in flight
    deadline = time.monotonic() + 5
    while not p.stats().errors and time.monotonic() < deadline:
        time.sleep(0.05)
    p.close()
    assert p.stats().errors == {"timeout": 1}


def wait_until(condition, ceiling_s=30.0):
    """Polls ``condition`` until it holds; False after ``ceiling_s`` (generous: the machine is loaded)."""
    deadline = time.monotonic() + ceiling_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickling_provider_is_cut_at_the_total_deadline(api, phase, caplog):
    """One byte a second never trips a per-read timeout of 1.5 s; the total deadline cuts it,
    counts a timeout and logs it, and the poller's next poll is not held up."""
    trickle = Trickle(phase, interval_s=1.0, limit_s=20.0)
    api.routes["/v3/carbon-intensity/latest"] = trickle
    p = polling(em_source(api), timeout_seconds=1.5)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert p.poll() is False
    took = time.monotonic() - t0
    assert 1.5 <= took < 10.0  # the deadline, plus slack for a loaded machine; the trickle lasts 20 s
    assert trickle.sent >= 1 and wait_until(lambda: trickle.ended is not None)  # the connection was cut
    assert trickle.ended - trickle.started < 15.0
    assert p.stats().errors == {"timeout": 1}
    assert "[timeout]" in caplog.text and "connect, headers and body together" in caplog.text
    api.routes["/v3/carbon-intensity/latest"] = em_latest(321)
    assert p.poll() and p.current(time.time()).g_per_kwh == 321


def test_the_deadline_holds_through_an_http_proxy(api):
    """The fake API acts as the proxy (it routes on the absolute URL's path), trickling its headers."""
    from gpu_carbon_exporter.carbon.http import JsonHttp, ProviderError

    api.routes["/v3/carbon-intensity/latest"] = trickle = Trickle("headers", interval_s=1.0, limit_s=20.0)
    http = JsonHttp(timeout_seconds=1.5)
    http.session.trust_env = False  # only the proxy given here: the name is never resolved
    http.session.proxies = {"http": api.url}
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as err:
        http.get("http://provider.invalid/v3/carbon-intensity/latest")
    assert err.value.reason == "timeout" and time.monotonic() - t0 < 10.0 and trickle.sent >= 1


def test_a_trickled_forecast_does_not_hold_back_the_latest_value(api, caplog):
    trickle = Trickle("body", interval_s=1.0, limit_s=20.0)
    api.routes["/v3/carbon-intensity/latest"] = em_latest(287)
    api.routes["/v3/carbon-intensity/forecast"] = trickle
    p = polling(em_source(api, forecast=True), timeout_seconds=5.0, poll_interval_seconds=600)
    p.start()
    try:
        assert wait_until(lambda: not p.current(time.time()).fallback)
        seen = time.monotonic()
        i = p.current(time.time())
        assert (i.g_per_kwh, i.source) == (287, "electricitymaps")
        # published while the forecast request was still being trickled (or not yet made)
        assert trickle.ended is None or seen < trickle.ended
        assert wait_until(lambda: p.stats().errors == {"timeout": 1})
        assert trickle.started is not None and wait_until(lambda: trickle.ended is not None)
        assert trickle.ended - trickle.started < 15.0  # cut at the 5 s deadline, not the server's 20 s
    finally:
        p.close()
    assert "forecast unavailable [timeout]" in caplog.text
    assert p.healthy() and p.current(time.time()).g_per_kwh == 287 and p.forecast(time.time()) is None


def test_redirects_only_within_the_same_host(api):
    port = api.url.rsplit(":", 1)[1]
    api.routes["/v3/carbon-intensity/latest"] = (302, {"Location": "/v3/moved"}, b"")
    api.routes["/v3/moved"] = em_latest(123)
    p = polling(em_source(api))
    assert p.poll() and p.current(time.time()).g_per_kwh == 123
    api.routes["/v3/carbon-intensity/latest"] = (302, {"Location": f"http://localhost:{port}/v3/moved"}, b"")
    assert not p.poll() and p.stats().errors == {"redirect": 1}
    assert len(api.hits("/v3/moved")) == 1  # the other host was never asked


def test_rate_limit_honours_retry_after(api):
    api.routes["/v3/carbon-intensity/latest"] = sequence((429, {"Retry-After": "1"}, {"error": "slow down"}),
                                                         em_latest(250))
    p = polling(em_source(api), retries=2, backoff_s=0.01)
    assert p.poll()
    first, second = api.hits("/v3/carbon-intensity/latest")
    assert second["time"] - first["time"] >= 1.0
    assert p.stats().errors == {"rate_limited": 1} and p.current(time.time()).g_per_kwh == 250


def test_retries_with_backoff_then_success(api):
    api.routes["/v3/carbon-intensity/latest"] = sequence((500, {}, {}), (502, {}, {}), em_latest(260))
    p = polling(em_source(api), retries=3, backoff_s=0.05)
    assert p.poll()
    times = [r["time"] for r in api.hits("/v3/carbon-intensity/latest")]
    assert times[1] - times[0] >= 0.05 and times[2] - times[1] >= 0.1  # exponential
    assert p.stats().errors == {"http_5xx": 2} and p.stats().successes == 1


def test_last_good_value_then_static_after_max_age(api):
    clock = [time.time()]
    api.routes["/v3/carbon-intensity/latest"] = em_latest(210)
    p = polling(em_source(api), max_age_seconds=100, clock=lambda: clock[0])
    assert p.poll()
    api.routes["/v3/carbon-intensity/latest"] = (500, {}, {})
    assert not p.poll()
    held = p.current(clock[0] + 50)
    assert (held.g_per_kwh, held.source, held.fallback) == (210, "electricitymaps", True)
    clock[0] += 101
    gone = p.current(clock[0])
    assert (gone.g_per_kwh, gone.source, gone.fallback) == (333.0, "static", True)


# -- WattTime ------------------------------------------------------------------
def wt_forecast(now, values, step=300.0, units="lbs_co2_per_mwh"):
    return {"data": [{"point_time": iso(now + k * step, "%Y-%m-%dT%H:%M:%S+00:00"), "value": v}
                     for k, v in enumerate(values)],
            "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": units,
                     "data_point_period_seconds": int(step), "generated_at": iso(now)}}


def test_watttime_login_marginal_signal_and_units(api):
    now = time.time()
    api.routes["/login"] = (200, {}, {"token": "tok-1"})
    api.routes["/v3/forecast"] = (200, {}, wt_forecast(now - 10, [1000, 500]))
    p = polling(WattTime("ann", "pw", "CAISO_NORTH", base_url=api.url))
    assert p.poll()
    login = api.hits("/login")[0]["headers"]["Authorization"]
    assert base64.b64decode(login.split()[1]) == b"ann:pw"
    fc = api.hits("/v3/forecast")[0]
    assert fc["headers"]["Authorization"] == "Bearer tok-1"
    assert fc["query"] == {"region": ["CAISO_NORTH"], "signal_type": ["co2_moer"]}
    i = p.current(time.time())
    assert i.g_per_kwh == pytest.approx(1000 * 0.45359237) and i.signal == "marginal" and i.source == "watttime"


def test_watttime_expired_token_is_renewed(api):
    now = time.time()
    api.routes["/login"] = sequence((200, {}, {"token": "old"}), (200, {}, {"token": "new"}))
    api.routes["/v3/forecast"] = lambda req: (
        (200, {}, wt_forecast(now, [800])) if req["headers"].get("Authorization") == "Bearer new"
        else (401, {}, {"error": "token expired"}))
    p = polling(WattTime("ann", "pw", "CAISO_NORTH", base_url=api.url))
    assert p.poll()
    assert len(api.hits("/login")) == 2 and p.current(time.time()).g_per_kwh == pytest.approx(800 * 0.45359237)


def test_watttime_wrong_units_rejected(api):
    api.routes["/login"] = (200, {}, {"token": "t"})
    api.routes["/v3/forecast"] = (200, {}, wt_forecast(time.time(), [300], units="kg_co2_per_mwh"))
    p = polling(WattTime("ann", "pw", "CAISO_NORTH", base_url=api.url))
    assert not p.poll() and p.stats().errors == {"units": 1}


# -- UK Carbon Intensity -------------------------------------------------------
def uk_period(t, forecast, actual=None):
    return {"from": iso(t, "%Y-%m-%dT%H:%MZ"), "to": iso(t + 1800, "%Y-%m-%dT%H:%MZ"),
            "intensity": {"forecast": forecast, "actual": actual, "index": "moderate"}}


def test_uk_national_prefers_actual(api):
    now = time.time() - 60
    api.routes["/intensity"] = (200, {}, {"data": [uk_period(now, 250, actual=241)]})
    forecast = (200, {}, {"data": [uk_period(now + 1800 * k, 200 - 10 * k) for k in range(1, 6)]})
    for t in (time.time(), time.time() + 60):  # the request names the current minute
        api.routes[f"/intensity/{iso(t, '%Y-%m-%dT%H:%MZ')}/fw24h"] = forecast
    p = polling(UKCarbonIntensity(base_url=api.url))
    assert p.poll()
    assert p.current(time.time()).g_per_kwh == 241
    assert p.forecast(time.time()).min_g_per_kwh == 150


def test_uk_regional_by_region_id_and_postcode(api):
    now = time.time() - 60
    regional = {"data": [{"regionid": 13, "dnoregion": "UKPN London", "shortname": "London",
                          "data": [{**uk_period(now, 187), "generationmix": [{"fuel": "gas", "perc": 40.1}]}]}]}
    api.routes["/regional/regionid/13"] = (200, {}, regional)
    api.routes["/regional/postcode/RG10"] = (200, {}, {"data": [{**regional["data"][0], "postcode": "RG10"}]})
    for kw in ({"region_id": 13}, {"postcode": "RG10"}):
        p = polling(UKCarbonIntensity(base_url=api.url, forecast=False, **kw))
        assert p.poll() and p.current(time.time()).g_per_kwh == 187


def test_uk_regional_forecast_shape(api):
    now = time.time() - 60
    api.routes["/regional/regionid/13"] = (200, {}, {"data": [{"regionid": 13, "data": [uk_period(now, 180)]}]})

    def forecast(req):
        return 200, {}, {"data": {"regionid": 13, "shortname": "London",
                                  "data": [uk_period(now + 1800 * k, 180 - 20 * k) for k in range(1, 4)]}}
    p = polling(UKCarbonIntensity(base_url=api.url, region_id=13), window_hours=0.5)
    api.routes.update({f"/regional/intensity/{iso(t, '%Y-%m-%dT%H:%MZ')}/fw24h/regionid/13": forecast
                       for t in (time.time(), time.time() + 60)})
    assert p.poll()
    assert p.forecast(time.time()).min_g_per_kwh == 120


# -- configuration and secrets ---------------------------------------------------
def test_config_builds_live_provider_with_secret_from_env_or_file(api, tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TOKEN", TOKEN)
    cfg = parse_config({"carbon": {"zone": "de", "zones": {"de": {
        "provider": "electricitymaps", "zone_id": "DE", "token_env": "EM_TOKEN", "base_url": api.url,
        "fallback": {"provider": "country", "country": "DEU"}}}}})
    p = build_provider(cfg["carbon"])
    assert isinstance(p, PollingIntensity) and p.source.token == TOKEN
    assert p.current(time.time()).source == "country_table"  # before the first poll: the fallback
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    zones = cfg["carbon"]["zones"]
    zones["de"] = dataclasses.replace(zones["de"], token_env=None, token_file=str(secret))
    assert build_provider(cfg["carbon"]).source.token == TOKEN
    monkeypatch.delenv("EM_TOKEN")
    zones["de"] = dataclasses.replace(zones["de"], token_env="EM_TOKEN", token_file=None)
    with pytest.raises(ConfigError, match="EM_TOKEN is not set"):
        build_provider(cfg["carbon"])


@pytest.mark.parametrize("zone, fragment", [
    ({"provider": "electricitymaps", "zone_id": "DE"}, "token_env: required for provider electricitymaps"),
    ({"provider": "electricitymaps", "token_env": "X"}, "zone_id: required"),
    ({"provider": "watttime", "username": "u", "password_env": "P"}, "region: required"),
    ({"provider": "ukcarbonintensity", "region_id": 99}, "region_id: must be in [1, 17], a GB region id"),
    ({"provider": "ukcarbonintensity", "fallback": {"provider": "watttime"}}, "fallback.provider: must be static"),
    ({"provider": "static", "g_per_kwh": 5, "fallback": {"provider": "static", "g_per_kwh": 3}}, "only live"),
])
def test_live_config_errors(zone, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config({"carbon": {"zones": {"z": zone}}}, "c.yml")
    assert fragment in str(err.value) and str(err.value).startswith("c.yml: carbon.zones.z.")


# -- exactness and exposition ----------------------------------------------------
def test_emissions_exact_under_a_stepped_live_forecast(api):
    """Intensity steps every 7 s from a WattTime forecast; the meter splits each sample at the steps."""
    from conftest import ManualClock, sim_nvml
    from gpu_carbon_exporter.meter import Meter
    from gpu_carbon_exporter.sim.scenario import GroundTruth, parse_scenario
    from gpu_carbon_exporter.sources.nvml import NvmlSource

    clock = ManualClock(start=float(int(time.time())))
    lbs = [900, 300, 1500, 600, 1200, 450, 1000, 700, 1100, 500]
    steps = [[7.0 * k, v * 0.45359237] for k, v in enumerate(lbs)]
    api.routes["/login"] = (200, {}, {"token": "t"})
    api.routes["/v3/forecast"] = (200, {}, wt_forecast(clock.start, lbs, step=7.0))
    data = {"zone": "Z", "pue": 1.4, "intensity": {"Z": steps}, "devices": [
        {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "square", "period_s": 0.01, "duty": 0.4,
                                                     "high_w": 690, "low_w": 140}},
        {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 420}}]}
    p = PollingIntensity("Z", WattTime("u", "p", "R", base_url=api.url), StaticIntensity("Z", 1.0),
                         timeout_seconds=2, retries=0, clock=clock, max_age_seconds=3600)
    assert p.poll()
    meter = Meter([NvmlSource(sim_nvml(data, clock))], p, pue=1.4, clock=clock)
    meter.open()
    meter.sample()
    for _ in range(65):
        clock.advance(1.0)
        meter.sample()
    truth = GroundTruth(parse_scenario(data))
    for d in meter.snapshot.devices:
        want = truth.device_emissions_g(d.identity.index, 0, 65)
        assert d.counters.emissions_g == pytest.approx(want, rel=1e-3), d.identity.index


def test_exposition_carries_provider_health_and_forecast(api):
    import subprocess
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry
    from conftest import require_binary
    from gpu_carbon_exporter.collector import SnapshotCollector
    from gpu_carbon_exporter.meter import Meter
    from gpu_carbon_exporter.sources.nvml import NvmlSource
    from conftest import ManualClock, sim_nvml

    now = time.time()
    api.routes["/login"] = (200, {}, {"token": "t"})
    api.routes["/v3/forecast"] = sequence((500, {}, {}), (200, {}, wt_forecast(now - 5, [900, 300, 1200, 100])))
    p = polling(WattTime("u", "p", "R", base_url=api.url), retries=1, window_hours=600 / 3600)
    assert p.poll()
    clock = ManualClock(start=now)
    meter = Meter([NvmlSource(sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3",
                                                        "power": {"pattern": "constant", "watts": 300}}]}, clock))],
                  p, clock=clock)
    meter.open()
    meter.sample()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: meter.snapshot, clock=clock))
    text = generate_latest(reg).decode()
    assert 'gpu_carbon_grid_intensity_grams_per_kwh{zone="Z"}' in text
    assert 'gpu_carbon_grid_intensity_fallback{zone="Z"} 0.0' in text
    assert 'gpu_carbon_grid_intensity_source_info{signal="marginal",source="watttime",zone="Z"} 1.0' in text
    assert 'gpu_carbon_intensity_provider_errors_total{provider="watttime",reason="http_5xx",zone="Z"} 1.0' in text
    assert 'gpu_carbon_intensity_provider_successes_total{provider="watttime",zone="Z"} 1.0' in text
    assert 'gpu_carbon_grid_intensity_forecast_min_grams_per_kwh{horizon_hours="8",zone="Z"}' in text
    assert 'gpu_carbon_grid_intensity_lowest_window_start_seconds' \
           '{horizon_hours="8",window_hours="0.166667",zone="Z"}' in text
    out = subprocess.run([require_binary("promtool"), "check", "metrics"], input=text.encode(), capture_output=True)
    assert out.returncode == 0, out.stderr


def test_forecast_not_in_plan_keeps_the_latest_value(api, caplog):
    """A token without forecast access: the latest value is still served, the failure counted."""
    api.routes["/v3/carbon-intensity/latest"] = em_latest(333)
    api.routes["/v3/carbon-intensity/forecast"] = (403, {}, {"error": "forecast not in your plan"})
    p = polling(em_source(api, forecast=True))
    assert p.poll()
    i = p.current(time.time())
    assert (i.g_per_kwh, i.source, i.fallback) == (333, "electricitymaps", False)
    assert p.stats().errors == {"auth": 1} and p.forecast(time.time()) is None
    assert "forecast unavailable [auth]" in caplog.text


def test_intensity_age_is_absent_before_the_first_good_fetch(api):
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from gpu_carbon_exporter.collector import SnapshotCollector
    from gpu_carbon_exporter.meter import Meter
    from gpu_carbon_exporter.sources.nvml import NvmlSource

    from conftest import ManualClock, sim_nvml

    api.routes["/v3/carbon-intensity/latest"] = (500, {}, {})
    p = polling(em_source(api), poll_interval_seconds=60)
    p.poll()  # fails: the fallback is served, nothing was ever fetched
    clock = ManualClock()
    nv = sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3",
                                "power": {"pattern": "constant", "watts": 1}}]}, clock)
    meter = Meter([NvmlSource(nv)], p, clock=clock)
    meter.open()
    meter.sample()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: meter.snapshot, clock=clock))
    text = generate_latest(reg).decode()
    assert "gpu_carbon_grid_intensity_age_seconds{" not in text
    assert 'gpu_carbon_grid_intensity_fallback{zone="Z"} 1.0' in text


def test_a_failing_provider_is_its_own_health_signal_not_a_failing_collector(api):
    """A live provider that fails, with its static fallback serving: the provider's own gauge reads 0
    (degraded: emissions go on at the last good or fallback value), and no device collector reads
    failed, so GpuCarbonCollectorFailing (device sources) stays silent; the provider reads 1 once a
    poll succeeds again."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from gpu_carbon_exporter.collector import SnapshotCollector
    from gpu_carbon_exporter.meter import Meter
    from gpu_carbon_exporter.sources.nvml import NvmlSource

    from conftest import ManualClock, sim_nvml

    api.routes["/v3/carbon-intensity/latest"] = (503, {}, {})
    p = polling(em_source(api), poll_interval_seconds=60)
    assert not p.poll()
    clock = ManualClock()
    h100 = {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 1}}
    nv = sim_nvml({"devices": [h100]}, clock)
    meter = Meter([NvmlSource(nv)], p, clock=clock)
    meter.open()
    meter.sample()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: meter.snapshot, clock=clock))
    text = generate_latest(reg).decode()
    assert 'gpu_carbon_intensity_provider_up{provider="electricitymaps",zone="Z"} 0.0' in text
    assert 'gpu_carbon_grid_intensity_fallback{zone="Z"} 1.0' in text
    assert 'gpu_carbon_collector_success{collector="nvml"} 1.0' in text
    assert [line for line in text.splitlines() if line.startswith("gpu_carbon_collector_success{")] == \
        ['gpu_carbon_collector_success{collector="nvml"} 1.0']
    api.routes["/v3/carbon-intensity/latest"] = em_latest(300)
    assert p.poll()
    clock.advance(1.0)
    meter.sample()
    text = generate_latest(reg).decode()
    assert 'gpu_carbon_intensity_provider_up{provider="electricitymaps",zone="Z"} 1.0' in text

"""Regression tests for the HTTP endpoint and the configuration under hostile or odd input."""
import logging
import socket
import ssl
import threading
import time

import bcrypt
import pytest
import requests
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest

from gpu_carbon_exporter.carbon.http import MAX_RETRY_AFTER_S, JsonHttp, ProviderError, retry_after
from gpu_carbon_exporter.cli import main
from gpu_carbon_exporter.startup import make_collector
from gpu_carbon_exporter.config import ConfigError, load_config, parse_config
from gpu_carbon_exporter.exposition import Exposition
from gpu_carbon_exporter.logfmt import LogfmtFormatter
from gpu_carbon_exporter.web.auth import BasicAuth
from gpu_carbon_exporter.web import (LISTEN_BACKLOG, ExporterServer, accepts_gzip, load_web_config,
                                     watch_web_config)

from certs import make_ca, make_leaf
from test_web import serve, stop_servers, pki  # noqa: F401 - fixtures

PROMETHEUS_2_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
                       "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
PROMETHEUS_3_ACCEPT = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
                       "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
                       "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
PROMETHEUS_ENCODING = "gzip"


# -- 1. slow clients ----------------------------------------------------------------------------------
def trickle(port, stop, opened):
    """A slowloris client: one header byte every 0.3 s, reconnecting whenever it is cut."""
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            opened.append(1)
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.3):
                    break
                s.send(bytes([byte]))
        except OSError:
            time.sleep(0.05)
        finally:
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass


@pytest.mark.parametrize("attackers", [8, 16])  # at the cap and at twice the cap
def test_scrapes_are_served_under_a_slow_client_flood(clock, tmp_path, stop_servers, caplog, attackers):
    server, port = serve(clock, None, tmp_path, read_timeout_seconds=2.0, max_connections=8)
    stop_servers.append(server)
    stop, opened = threading.Event(), []
    threads = [threading.Thread(target=trickle, args=(port, stop, opened), daemon=True) for _ in range(attackers)]
    for t in threads:
        t.start()
    try:
        # the flood really holds every slot before the scrapes start (a condition, not a guess at time)
        deadline = time.monotonic() + 30
        while len(server._conns) < server.max_connections or len(opened) < min(attackers, 8):
            assert time.monotonic() < deadline, "the slow clients never held every slot"
            time.sleep(0.02)
        held = len(server._conns)
        codes = []
        for _ in range(6):
            codes.append(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code)
            codes.append(requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code)
            time.sleep(0.3)
    finally:
        stop.set()
    assert codes == [200] * 12 and held == server.max_connections
    assert len(opened) >= attackers
    limit_logs = [r for r in caplog.records if "connection limit" in r.getMessage()]
    assert len(limit_logs) <= 2  # rate-limited: at most one warning per 10 s per kind


def test_a_stalled_tls_handshake_is_cut_at_the_header_deadline(clock, tmp_path, pki, stop_servers):
    crt, key = pki["server"]
    server, port = serve(clock, f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n", tmp_path,
                         read_timeout_seconds=1.0, max_connections=4)
    stop_servers.append(server)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]  # never send a ClientHello
    r = requests.get(f"https://127.0.0.1:{port}/metrics", verify=str(pki["ca"]), timeout=5)
    assert r.status_code == 200
    idle[-1].settimeout(5)
    assert idle[-1].recv(10) == b""  # cut by the deadline (or evicted), not held for ever
    for s in idle:
        s.close()


# -- 2. the fast path Prometheus takes -------------------------------------------------------------------
def demo_collector(clock):
    from gpu_carbon_exporter.carbon.static import StaticIntensity
    from gpu_carbon_exporter.meter import Meter
    from gpu_carbon_exporter.sources.nvml import NvmlSource
    from conftest import sim_nvml

    nv = sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": 3, "power": {
        "pattern": "square", "period_s": 0.1, "duty": 0.5, "high_w": 600, "low_w": 100}}]}, clock)
    meter = Meter([NvmlSource(nv)], StaticIntensity("DEU", 380), clock=clock)
    meter.open()
    meter.sample()
    clock.advance(1)
    meter.sample()
    collector = make_collector(meter, parse_config({"carbon": {"embodied": {"kg_co2e_per_device": 150}}}))
    collector.clock = clock
    return meter, collector


def test_openmetrics_fast_path_is_byte_identical_to_prometheus_client(clock):
    _, collector = demo_collector(clock)
    ours = Exposition(collector).body(openmetrics=True, compress=False)
    assert ours == om_generate_latest(collector)
    assert ours.endswith(b"# EOF\n") and b"gpu_carbon_gpu_energy_joules_total{" in ours


def test_bulk_is_rendered_once_per_snapshot_and_gzip_is_one_member(clock):
    meter, collector = demo_collector(clock)
    calls = []
    real = collector.collect_cached
    collector.collect_cached = lambda snap: calls.append(1) or real(snap)
    expo = Exposition(collector)
    plain = expo.body(openmetrics=True, compress=False)
    packed = expo.body(openmetrics=True, compress=True)
    import zlib

    reader = zlib.decompressobj(wbits=31)  # reads one gzip member, as curl does
    assert reader.decompress(packed) == plain and reader.eof and reader.unused_data == b""
    expo.body(openmetrics=False, compress=True)
    assert len(calls) == 2  # once per format for this snapshot
    clock.advance(1)
    meter.sample()
    expo.body(openmetrics=True, compress=True)
    assert len(calls) == 3  # a new snapshot is rendered again
    clock.advance(7)  # the sampler stalls: ages still move, computed at scrape time
    assert b'collector_last_run_age_seconds{collector="nvml"} 7.0' in expo.body(openmetrics=True, compress=False)


@pytest.mark.parametrize("accept", [PROMETHEUS_2_ACCEPT, PROMETHEUS_3_ACCEPT])
def test_prometheus_accept_headers_get_openmetrics_gzipped(clock, tmp_path, stop_servers, accept):
    server, port = serve(clock, None, tmp_path)
    stop_servers.append(server)
    r = requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept,
                                                                  "Accept-Encoding": PROMETHEUS_ENCODING},
                     timeout=5)
    assert r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.headers["Content-Encoding"] == "gzip" and r.text.endswith("# EOF\n")


# -- 3. basic auth timing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cost", [5, 6])
def test_unknown_users_cost_the_same_bcrypt_rounds_as_real_ones(cost):
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(cost))})
    assert int(auth._dummy[4:6]) == cost
    assert not auth.check("Basic " + __import__("base64").b64encode(b"eve:pw").decode())


# -- 4. intensity HTTP client ----------------------------------------------------------------------------------
def test_retry_after_is_capped_and_a_malformed_date_backs_off():
    assert retry_after("120") == 120.0
    assert retry_after("999999") == MAX_RETRY_AFTER_S
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after("soon") is None and retry_after("nan") is None and retry_after("") is None


def test_an_https_to_http_redirect_is_refused(pki):
    from fakeapi import FakeApi

    plain = FakeApi()
    plain.routes["/v3/x"] = (200, {}, {"ok": True})
    tls = FakeApi()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki["server"])
    tls.server.socket = ctx.wrap_socket(tls.server.socket, server_side=True)
    port = tls.server.server_address[1]
    tls.routes["/v3/x"] = (302, {"Location": f"http://localhost:{port}/v3/x"}, "")
    http = JsonHttp(timeout_seconds=5)
    http.session.verify = str(pki["ca"])
    try:
        with pytest.raises(ProviderError, match="https to plain http") as err:
            http.get(f"https://localhost:{port}/v3/x", headers={"auth-token": "secret"})
        assert err.value.reason == "redirect"
    finally:
        plain.close()
        tls.close()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickled_tls_answer_is_cut_at_the_total_deadline(pki, phase):
    """Over TLS the request's socket is wrapped (its descriptor moves to the TLS socket); the deadline
    still cuts it. One byte a second never trips the 1.5-s per-read timeout."""
    from fakeapi import FakeApi, Trickle

    tls = FakeApi()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki["server"])
    tls.server.socket = ctx.wrap_socket(tls.server.socket, server_side=True)
    tls.routes["/v3/x"] = trickle = Trickle(phase, interval_s=1.0, limit_s=20.0)
    http = JsonHttp(timeout_seconds=1.5)
    http.session.verify = str(pki["ca"])
    t0 = time.monotonic()
    try:
        with pytest.raises(ProviderError) as err:
            http.get(f"https://localhost:{tls.server.server_address[1]}/v3/x")
        assert err.value.reason == "timeout" and time.monotonic() - t0 < 10.0
        deadline = time.monotonic() + 30
        while trickle.ended is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert trickle.ended is not None and trickle.ended - trickle.started < 15.0  # not the server's 20 s
    finally:
        tls.close()


# -- 5-7. flags and config values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e-9"])
def test_sampling_interval_flag_is_validated_like_the_config_key(value, capsys):
    assert main(["--simulate", "--once", "--sampling.interval", value]) == 2
    assert "sampling.interval_seconds" in capsys.readouterr().err


@pytest.mark.parametrize("text, key", [
    ("sampling:\n  interval_seconds: .inf\n", "sampling.interval_seconds"),
    ("web:\n  read_timeout_seconds: .inf\n", "web.read_timeout_seconds"),
    ("carbon:\n  pue: .inf\n", "carbon.pue"),
    ("carbon:\n  pue: .nan\n", "carbon.pue"),
    ("attribution:\n  idle_watts: {H100: .nan}\n", "attribution.idle_watts.H100"),
    ("sampling:\n  interval_seconds: " + "9" * 300 + "\n", "sampling.interval_seconds"),
    ("web:\n  max_connections: " + "9" * 300 + "\n", "web.max_connections"),
])
def test_non_finite_and_absurd_values_are_refused(tmp_path, text, key):
    f = tmp_path / "c.yml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert str(err.value).startswith(f"{f}: {key}: ") and len(str(err.value)) < 300


def alias_bomb() -> str:
    """~500 bytes of YAML whose value, fully expanded, has 9**9 (387 million) leaves."""
    levels = ["&a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        levels.append(f"&{name} [{', '.join(['*' + prev] * 9)}]")
    return "sampling:\n  interval_seconds: [" + ", ".join(levels) + "]\n"


def test_hostile_config_files_get_one_clear_error(tmp_path, capsys):
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(alias_bomb())
    assert len(bomb.read_bytes()) < 600
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes(b"carbon:\n  zone: \xe9\n")
    deep = tmp_path / "deep.yml"
    deep.write_text("sampling: " + "[" * 50000 + "]" * 50000 + "\n")
    for path, fragment in ((bomb, "sampling.interval_seconds: expected a number"), (latin1, "not UTF-8"),
                           (deep, "nested too deeply")):
        assert main(["check-config", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: ") and fragment in err and len(err) < 1000, err
    web = tmp_path / "web.yml"
    web.write_text("http_server_config: [1]\n")
    with pytest.raises(ConfigError, match="http_server_config: expected a mapping"):
        load_web_config(web)


# -- 8. TLS ---------------------------------------------------------------------------------------------------------
def test_exporter_toolkit_tls_keys(tmp_path, pki, caplog):
    crt, key = pki["server"]
    f = tmp_path / "web.yml"
    f.write_text(f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  max_version: TLS12\n"
                 "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"
                 "  prefer_server_cipher_suites: true\n  curve_preferences: [CurveP256]\n")
    ctx = load_web_config(f).ssl_context
    names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names == {"ECDHE-ECDSA-AES256-GCM-SHA384"}
    assert "curve_preferences is accepted but not applied" in caplog.text
    f.write_text(f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  cipher_suites: [RC4]\n")
    with pytest.raises(ConfigError, match="cipher_suites: unknown or insecure"):
        load_web_config(f)
    f.write_text(f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
                 "  min_version: TLS13\n  max_version: TLS12\n")
    with pytest.raises(ConfigError, match="min_version: TLS13 is above max_version TLS12"):
        load_web_config(f)


def test_certificates_are_reloaded_when_their_files_change(clock, tmp_path, pki, stop_servers):
    d = tmp_path / "tls"
    d.mkdir()
    ca_crt, ca_cert, ca_key = make_ca(d / "ca2", "second-ca")
    crt, key = pki["server"]
    (d / "tls.crt").write_bytes(crt.read_bytes())
    (d / "tls.key").write_bytes(key.read_bytes())
    server, port = serve(clock, "tls_server_config:\n  cert_file: tls/tls.crt\n  key_file: tls/tls.key\n", tmp_path)
    stop_servers.append(server)
    stop = threading.Event()
    threading.Thread(target=watch_web_config, args=(server, tmp_path / "web.yml", stop, 0.1), daemon=True).start()
    url = f"https://127.0.0.1:{port}/healthz"
    assert requests.get(url, verify=str(pki["ca"]), timeout=5).status_code == 200
    new_crt, new_key = make_leaf(d / "new", ca_cert, ca_key, "localhost", server=True)
    (d / "tls.key").write_bytes(new_key.read_bytes())  # as cert-manager rotates: same paths, new files
    (d / "tls.crt").write_bytes(new_crt.read_bytes())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url, verify=str(ca_crt), timeout=5).status_code == 200:
                break
        except requests.exceptions.SSLError:
            time.sleep(0.1)
    else:
        pytest.fail("the rotated certificate was not picked up")
    stop.set()


# -- 9. HTTP details --------------------------------------------------------------------------------------------------
def test_accept_encoding_quality_values():
    assert accepts_gzip("gzip") and accepts_gzip("gzip, deflate") and accepts_gzip("*")
    assert not accepts_gzip("gzip;q=0") and not accepts_gzip("identity") and not accepts_gzip(None)
    assert not accepts_gzip("*;q=0") and accepts_gzip("deflate, *;q=0.1") and not accepts_gzip("gzip;q=0, *")


def test_http_details(clock, tmp_path, stop_servers):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    server, port = serve(clock, f"basic_auth_users:\n  prom: '{hashed}'\n", tmp_path)
    stop_servers.append(server)
    url = f"http://127.0.0.1:{port}/metrics"
    import base64

    token = base64.b64encode(b"prom:pw").decode()
    r = requests.get(url, headers={"Authorization": f"basic {token}", "Accept-Encoding": "gzip;q=0"}, timeout=5)
    assert r.status_code == 200 and "Content-Encoding" not in r.headers  # lower-case scheme (RFC 7617)
    assert r.headers["Server"].startswith("gpu-carbon-exporter/") and "Python" not in r.headers["Server"]
    # a GET with a body: refused, and the body never answered as a second request
    s = socket.create_connection(("127.0.0.1", port))
    body = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    s.settimeout(1.0)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        pass
    s.close()
    assert got.count(b"HTTP/1.1 ") == 1 and got.startswith(b"HTTP/1.1 400") and b"404" not in got


def test_log_lines_stay_one_parsable_line():
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, 'bad "value"\nsecond line \\ end', None, None)
    line = LogfmtFormatter().format(rec)
    assert "\n" not in line
    assert line.endswith('msg="bad \\"value\\"\\nsecond line \\\\ end"') and "level=error" in line


# -- 10. listen backlog
# --------------------------------------------------------------------------------------------------
def test_listen_backlog_holds_a_burst_of_new_connections(clock, tmp_path):
    """With the accept loop not yet running, the kernel completes handshakes up to the backlog."""
    from gpu_carbon_exporter.carbon.static import StaticIntensity
    from gpu_carbon_exporter.meter import Meter

    meter = Meter([], StaticIntensity("Z", 1), clock=clock)
    server = ExporterServer(("127.0.0.1", 0), make_collector(meter, parse_config({})),
                            load_web_config(None), lambda: (True, "ok"))
    port = server.server_address[1]
    socks = []
    try:
        for _ in range(300):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        import select

        pending, done, deadline = list(socks), [], time.monotonic() + 30
        while pending and time.monotonic() < deadline:  # every handshake completes, however loaded
            _, writable, _ = select.select([], pending, [], 0.5)
            done += [s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
            pending = [s for s in pending if s not in writable]
        assert LISTEN_BACKLOG >= 1024 and len(done) == 300
    finally:
        for s in socks:
            s.close()
        server.server_close()


def test_slow_request_bodies_cannot_lock_out_scrapes(clock, tmp_path, stop_servers):
    server, port = serve(clock, None, tmp_path, read_timeout_seconds=2.0, max_connections=8)
    stop_servers.append(server)
    slow = []
    for _ in range(16):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\nx")
        slow.append(s)
    try:
        codes = [requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code for _ in range(5)]
    finally:
        for s in slow:
            s.close()
    assert codes == [200] * 5


def test_a_tls_client_stalling_its_request_head_is_cut_at_the_deadline(clock, tmp_path, pki, stop_servers):
    crt, key = pki["server"]
    server, port = serve(clock, f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n", tmp_path,
                         read_timeout_seconds=1.0)
    stop_servers.append(server)
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    raw = socket.create_connection(("127.0.0.1", port))
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"GET /metrics HTTP/1.1\r\n")
    import select

    cut = False
    for _ in range(30):  # one header byte every 0.3 s: each resets a per-read timeout, not the deadline
        try:
            tls.send(b"a")
        except OSError:
            cut = True
            break
        if select.select([tls], [], [], 0.3)[0]:
            try:
                cut = tls.recv(100) == b""
            except (OSError, ssl.SSLError):
                cut = True
            break
    tls.close()
    assert cut  # the server shut the connection down at its 1-s head deadline, long before 9 s


@pytest.mark.parametrize("accept, kind", [
    ("application/openmetrics-text;version=1.0.0;escaping=dots", "client"),
    ("application/openmetrics-text;version=abc", "text"),
    (PROMETHEUS_3_ACCEPT, "openmetrics"),
    ("text/plain;version=0.0.4", "text"),
])
def test_content_negotiation_names_what_is_sent(accept, kind):
    from gpu_carbon_exporter.web import negotiate

    fmt, ctype = negotiate(accept)
    assert fmt == kind
    assert ctype.startswith("application/openmetrics-text") == (kind == "openmetrics" or "dots" in accept)


@pytest.mark.parametrize("name, text, fragment", [
    ("huge-int.yml", "sampling:\n  interval_seconds: " + "9" * 5000 + "\n", "invalid YAML"),
    ("long-key.yml", "sampling:\n  " + "k" * 1000 + ": 1\n", "unknown key"),
    ("long-mappers.yml", "attribution:\n  mappers: " + "m" * 100_000 + "\n", "unknown mapper"),
], ids=["huge-int", "long-key", "long-mappers"])
def test_long_or_huge_config_values_give_short_errors(tmp_path, capsys, name, text, fragment):
    f = tmp_path / name
    f.write_text(text)
    assert main(["check-config", str(f)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err) < 1000


@pytest.mark.parametrize("text, fragment", [
    ("tls_server_config:\n  cert_file: [1]\n  key_file: k\n", "tls_server_config.cert_file: expected a string"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: [TLS12]\n",
     "tls_server_config.min_version: expected a string"),
    ("http_server_config:\n  headers: {X-A: \"a\\nInjected: b\"}\n", "headers.X-A: expected one line"),
])
def test_malformed_web_config_values_are_clear_errors(tmp_path, text, fragment):
    f = tmp_path / "web.yml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_web_config(f)


def test_a_non_utf8_web_config_names_its_file(tmp_path):
    f = tmp_path / "web.yml"
    f.write_bytes(b"basic_auth_users:\n  \xe9: x\n")
    with pytest.raises(ConfigError, match=f"{f}: not UTF-8"):
        load_web_config(f)


@pytest.mark.parametrize("text, fragment", [
    ("devices: [" + ", ".join(f"&a{i} [" + ", ".join([f"*a{i-1}" if i else "x"] * 9) + "]" for i in range(9))
     + "]\n", "expected"),
    ("devices:\n  - model: NVIDIA H100 80GB HBM3\n    power: {pattern: constant, watts: .inf}\n", "finite"),
], ids=["alias-bomb", "inf-watts"])
def test_hostile_scenarios_give_short_errors(tmp_path, capsys, text, fragment):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    assert main(["--simulate", str(f), "--once"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err) < 1000, err[:300]


def test_the_server_serves_scrapes_from_the_per_snapshot_cache(clock, tmp_path, stop_servers):
    server, port = serve(clock, None, tmp_path)
    stop_servers.append(server)
    collector = server.exposition.collector
    calls = []
    real = collector.collect_cached
    collector.collect_cached = lambda snap: calls.append(1) or real(snap)
    session = requests.Session()
    session.headers.update({"Accept": PROMETHEUS_3_ACCEPT, "Accept-Encoding": PROMETHEUS_ENCODING})
    bodies = [session.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text for _ in range(5)]
    assert len(calls) == 1 and all(b.endswith("# EOF\n") for b in bodies)  # one render, five scrapes


def test_ipv6_addresses_are_bracketed():
    from gpu_carbon_exporter.web import format_address, parse_listen_address

    assert format_address("::1", 9842) == "[::1]:9842" and format_address("127.0.0.1", 1) == "127.0.0.1:1"
    assert parse_listen_address("[::1]:9842") == ("::1", 9842)


def test_a_slow_reader_is_cut_at_the_response_deadline(clock, tmp_path):
    """A client with a 1-KB receive window reading a little at a time: each read would reset a
    per-call timeout, the response deadline does not move."""
    from gpu_carbon_exporter.carbon.static import StaticIntensity
    from gpu_carbon_exporter.meter import Meter
    from gpu_carbon_exporter.sources.nvml import NvmlSource
    from conftest import sim_nvml

    nv = sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": 3500,
                                "power": {"pattern": "constant", "watts": 300}}]}, clock)
    meter = Meter([NvmlSource(nv)], StaticIntensity("Z", 100), clock=clock)
    meter.open()
    meter.sample()
    server = ExporterServer(("127.0.0.1", 0), make_collector(meter, parse_config({})), load_web_config(None),
                            lambda: (True, "ok"), read_timeout_seconds=1.0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        port = server.server_address[1]
        full = len(server.exposition.body(False, False))  # not over HTTP: the 1-s deadline applies there
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(0.2)
        saw_write, freed = False, False
        until = time.monotonic() + 6
        while time.monotonic() < until:  # 512 bytes every 0.1 s: a full read would take a minute
            phases = [c.phase for c in list(server._conns.values())]
            saw_write = saw_write or "write" in phases
            if saw_write and not phases:
                freed = True
                break
            try:
                s.recv(512)
            except (socket.timeout, OSError):
                pass
            time.sleep(0.1)
        s.close()
        # the response outlived its 1-s deadline: the watchdog cut it and the slot is free
        assert full > 5_000_000 and saw_write and freed  # more than the kernel buffers (4 MiB) hold
    finally:
        server.shutdown()
        server.server_close()

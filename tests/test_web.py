"""The HTTP endpoint with real TLS, mutual TLS and bcrypt basic auth."""
import gzip
import socket
import threading

import bcrypt
import pytest
import requests

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.startup import make_collector
from gpu_carbon_exporter.config import ConfigError, parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sources.nvml import NvmlSource
from gpu_carbon_exporter.web import ExporterServer, load_web_config, parse_listen_address

from certs import make_ca, make_leaf
from conftest import sim_nvml

FLEET = {"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": 2, "power": {"pattern": "constant", "watts": 300}}]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_crt, ca_cert, ca_key = make_ca(d / "ca")
    other_crt, other_cert, other_key = make_ca(d / "other-ca", "rogue-ca")
    return {
        "ca": ca_crt,
        "server": make_leaf(d / "server", ca_cert, ca_key, "localhost", server=True),
        "client": make_leaf(d / "client", ca_cert, ca_key, "prometheus", server=False),
        "rogue": make_leaf(d / "rogue", other_cert, other_key, "mallory", server=False),
    }


def serve(clock, web_yaml, tmp_path, **kw):
    meter = Meter([NvmlSource(sim_nvml(FLEET, clock))], StaticIntensity("Z", 100), clock=clock)
    meter.open()
    meter.sample()
    path = None
    if web_yaml is not None:
        path = tmp_path / "web.yml"
        path.write_text(web_yaml)
    server = ExporterServer(("127.0.0.1", 0), make_collector(meter, parse_config({})),
                            load_web_config(path), lambda: (True, "ok"), **kw)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def stop_servers():
    servers = []
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


def test_plain_http_routes(clock, tmp_path, stop_servers):
    server, port = serve(clock, None, tmp_path)
    stop_servers.append(server)
    base = f"http://127.0.0.1:{port}"
    r = requests.get(f"{base}/metrics", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert r.text.count("gpu_carbon_gpu_up{") == 2
    om = requests.get(f"{base}/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=5)
    assert om.headers["Content-Type"].startswith("application/openmetrics-text") and om.text.endswith("# EOF\n")
    gz = requests.get(f"{base}/metrics", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=5)
    assert gz.headers["Content-Encoding"] == "gzip" and b"gpu_carbon" in gzip.decompress(gz.raw.read())
    assert requests.get(f"{base}/healthz", timeout=5).text == "ok\n"
    assert "/metrics" in requests.get(base, timeout=5).text
    assert requests.get(f"{base}/nope", timeout=5).status_code == 404


def test_tls(clock, tmp_path, pki, stop_servers):
    crt, key = pki["server"]
    server, port = serve(clock, f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
                                "  min_version: TLS12\n", tmp_path)
    stop_servers.append(server)
    r = requests.get(f"https://127.0.0.1:{port}/metrics", verify=str(pki["ca"]), timeout=5)
    assert r.status_code == 200 and "gpu_carbon_gpu_energy_joules_total" in r.text
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{port}/metrics", verify=True, timeout=5)  # not a public CA
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)  # plain HTTP is refused


def test_mutual_tls(clock, tmp_path, pki, stop_servers):
    crt, key = pki["server"]
    server, port = serve(clock, f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
                                f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki['ca']}\n",
                         tmp_path)
    stop_servers.append(server)
    url = f"https://127.0.0.1:{port}/metrics"
    ok = requests.get(url, verify=str(pki["ca"]), cert=tuple(map(str, pki["client"])), timeout=5)
    assert ok.status_code == 200
    for cert in (None, tuple(map(str, pki["rogue"]))):
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(url, verify=str(pki["ca"]), cert=cert, timeout=5)


def test_basic_auth_with_bcrypt(clock, tmp_path, stop_servers):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    server, port = serve(clock, f"basic_auth_users:\n  prom: '{hashed}'\n", tmp_path)
    stop_servers.append(server)
    url = f"http://127.0.0.1:{port}/metrics"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, auth=("prom", "wrong"), timeout=5).status_code == 401
    assert requests.get(url, auth=("eve", "s3cret"), timeout=5).status_code == 401
    r = requests.get(url, auth=("prom", "s3cret"), timeout=5)
    assert r.status_code == 200 and "gpu_carbon_build_info" in r.text
    assert requests.get(url, auth=("prom", "s3cret"), timeout=5).status_code == 200  # cached path
    # the health check answers without credentials (probes), and tells nothing but its state
    health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code in (200, 503) and "gpu_carbon" not in health.text
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401
    assert requests.get(f"http://127.0.0.1:{port}/metrics?x=/healthz", timeout=5).status_code == 401


def test_slow_clients_cannot_starve_scrapes(clock, tmp_path, stop_servers):
    server, port = serve(clock, None, tmp_path, read_timeout_seconds=1.0, max_connections=8)
    stop_servers.append(server)
    stalled = []
    for _ in range(5):  # slowloris: open connections that never finish their request
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        stalled.append(s)
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    for s in stalled:  # served while every stalled connection is still open (none had timed out)
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(1)
        s.setblocking(True)
    stalled[0].settimeout(5)
    assert stalled[0].recv(1024) == b""  # the server hung up on the slow client after its timeout
    for s in stalled:
        s.close()


def test_tls_handshake_does_not_block_the_accept_loop(clock, tmp_path, pki, stop_servers):
    crt, key = pki["server"]
    server, port = serve(clock, f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n", tmp_path,
                         read_timeout_seconds=2.0)
    stop_servers.append(server)
    idle = socket.create_connection(("127.0.0.1", port))  # connects, never sends a ClientHello
    r = requests.get(f"https://127.0.0.1:{port}/metrics", verify=str(pki["ca"]), timeout=1.5)
    assert r.status_code == 200
    idle.close()


@pytest.mark.parametrize("text, fragment", [
    ("tls_server_config:\n  cert_file: a.crt\n", "tls_server_config.key_file: required"),
    ("basic_auth_users:\n  u: plaintext\n", "basic_auth_users.u: expected a bcrypt hash"),
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "cannot load certificate"),
    ("bogus: 1\n", "bogus: unknown"),
])
def test_web_config_errors(tmp_path, text, fragment):
    f = tmp_path / "web.yml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_web_config(f)
    assert str(err.value).startswith(str(f)) and fragment in str(err.value)


def test_mtls_without_ca_is_rejected(tmp_path, pki):
    crt, key = pki["server"]
    f = tmp_path / "web.yml"
    f.write_text(f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
                 "  client_auth_type: RequireAndVerifyClientCert\n")
    with pytest.raises(ConfigError, match="client_ca_file: required"):
        load_web_config(f)


def test_listen_address_parsing():
    assert parse_listen_address(":9842") == ("0.0.0.0", 9842)
    assert parse_listen_address("127.0.0.1:1") == ("127.0.0.1", 1)
    assert parse_listen_address("[::1]:9842") == ("::1", 9842)
    with pytest.raises(ValueError):
        parse_listen_address("localhost")


def test_the_idle_watchdog_ends_with_the_server_whatever_the_order():
    """The deadline watchdog sleeps while no connection is open. A connection that opens and is gone
    before the watchdog looks, then a shutdown while the watchdog waits for the lock: the watchdog
    must still see the shutdown (it once cleared the wake-up after server_close had set it, and slept
    for ever)."""
    from gpu_carbon_exporter.web.config import WebConfig

    class Empty:
        def collect(self):
            return []

    server = ExporterServer(("127.0.0.1", 0), Empty(), WebConfig(), lambda: (True, "ok"))
    watchdog = next(t for t in threading.enumerate() if t.name == "http-deadlines")
    closer = threading.Thread(target=server.server_close)
    with server._lock:  # what a connection's thread holds while it opens or ends
        server._wake.set()  # a connection came and went: the watchdog wakes, then waits on the lock
        closer.start()  # the shutdown lands meanwhile
        closer.join(0.2)
    closer.join(5)
    watchdog.join(5)
    assert not closer.is_alive() and not watchdog.is_alive()

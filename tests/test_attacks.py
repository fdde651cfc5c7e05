"""The endpoint under the attacks of the second fault-injection round: pipelining slow readers,
wrong-password floods, a bcrypt cost that never finishes, ambiguous framing, garbage request lines.

Each attack is made as it was found (loopback only, bounded in time), and each test first checks
that the attack really holds what it claims to hold before it asserts that scrapes get through.
"""
import base64
import logging
import secrets
import socket
import statistics
import threading
import time

import bcrypt
import pytest
import requests

from gpu_carbon_exporter.config import ConfigError
from gpu_carbon_exporter.web import EVICTABLE_AFTER_S, ExporterServer, load_web_config, watch_web_config

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.config import parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sources.nvml import NvmlSource
from gpu_carbon_exporter.startup import make_collector

from conftest import sim_nvml
from test_web import serve, stop_servers  # noqa: F401 - fixtures

CEILING_S = 30.0  # the longest any condition is waited for on a loaded machine


def wait_for(condition, what: str, ceiling: float = CEILING_S) -> None:
    until = time.monotonic() + ceiling
    while not condition():
        if time.monotonic() > until:
            raise AssertionError(f"not reached within {ceiling} s: {what}")
        time.sleep(0.05)


def serve_gpus(clock, gpus: int, **kw) -> ExporterServer:
    """A server over ``gpus`` simulated GPUs: 64 make a body of about 250 KB, so a hundred pipelined
    responses are far more than the kernel's socket buffers (4 MiB) take off the writer's hands."""
    nv = sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3", "count": gpus,
                                "power": {"pattern": "constant", "watts": 300}}]}, clock)
    meter = Meter([NvmlSource(nv)], StaticIntensity("Z", 100), clock=clock)
    meter.open()
    meter.sample()
    server = ExporterServer(("127.0.0.1", 0), make_collector(meter, parse_config({})), load_web_config(None),
                            lambda: (True, "ok"), **kw)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def busy_slots(server: ExporterServer) -> int:
    return sum(c.phase == "write" for c in list(server._conns.values()))


# -- pipelining slow readers ------------------------------------------------------------------------------
class Pipeliner(threading.Thread):
    """Pipelines many GET /metrics at once, then reads at ``rate_bps``, reconnecting when cut."""

    def __init__(self, port: int, stop: threading.Event, requests_each: int = 1000, rate_bps: int = 3000):
        super().__init__(daemon=True)
        self.port, self.stop, self.requests_each, self.rate_bps = port, stop, requests_each, rate_bps
        self.received, self.connected = 0, False

    def run(self) -> None:
        while not self.stop.is_set():
            s = socket.socket()
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(0.2)
                s.connect(("127.0.0.1", self.port))
                self.connected = True
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * self.requests_each)
                while not self.stop.is_set():
                    try:
                        chunk = s.recv(self.rate_bps // 10)
                    except socket.timeout:
                        chunk = b"-"
                    if not chunk:
                        break  # cut by the server
                    self.received += len(chunk.strip(b"-"))
                    self.stop.wait(0.1)
            except OSError:
                self.stop.wait(0.05)
            finally:
                self.connected = False
                s.close()


def test_pipelining_slow_readers_cannot_lock_out_scrapes_or_healthz(clock, tmp_path, stop_servers):
    """64 connections pipelining GET /metrics and reading at 3 KB/s held every slot for good (0/60
    scrapes, 0/5 health checks): each pipelined response renewed the write deadline, and a writing
    connection was never evicted. Now each connection has one write budget and at most 100
    requests, and the one with the least progress makes room for a new connection."""
    server = serve_gpus(clock, 16)  # the defaults: 64 connections, 10-s deadlines; a 26-KB body
    port = server.server_address[1]
    stop_servers.append(server)
    stop = threading.Event()
    attackers = [Pipeliner(port, stop) for _ in range(64)]
    for t in attackers:
        t.start()
    try:
        wait_for(lambda: all(t.received > 0 for t in attackers), "every pipeliner is being answered")
        wait_for(lambda: len(server._conns) == server.max_connections and any(
            time.monotonic() - c.opened > EVICTABLE_AFTER_S for c in list(server._conns.values())),
            "the pipeliners hold every slot, some past the time a new one is let in on")
        codes, health = [], []
        for i in range(20):
            codes.append(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code)
            if i % 4 == 0:
                health.append(requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code)
        live = sum(t.connected for t in attackers)
    finally:
        stop.set()
        for t in attackers:
            t.join(timeout=5)
    assert codes == [200] * 20 and health == [200] * 5
    assert live >= 48  # the attack went on while the scrapes were served


def test_a_full_server_evicts_the_writer_with_the_least_progress(clock, tmp_path, stop_servers):
    """Progress counts the current run of back-to-back responses, and a run younger than
    EVICTABLE_AFTER_S is never cut."""
    from gpu_carbon_exporter.web.server import _Conn

    server = serve_gpus(clock, 1, max_connections=3)
    stop_servers.append(server)
    now = time.monotonic()
    conns = []
    for sent, age in ((10_000_000, 5.0), (3_000, 5.0), (0, 0.2)):  # fast, slow, just begun
        c = _Conn(socket.socket(), 10.0)
        c.phase, c.run_started, c.sent = "write", now - age, sent
        conns.append(c)
        server._conns[id(c)] = c
    with server._lock:
        assert server._evict_one()
    assert id(conns[1]) not in server._conns and len(server._conns) == 2
    with server._lock:  # the fast one has made progress; the one just begun is not evictable yet
        assert server._evict_one() and id(conns[0]) not in server._conns
        assert not server._evict_one()
    for c in conns:
        c.sock.close()
    server._conns.clear()


def test_a_keep_alive_scrapers_new_response_is_not_evicted_for_a_pipeliner(clock, tmp_path, stop_servers):
    """A keep-alive scraper's average since it connected is low (it idles between scrapes); its
    current response is what counts, and a pipeliner stuck on a full buffer goes first."""
    from gpu_carbon_exporter.web.server import _Conn

    server = serve_gpus(clock, 1, max_connections=2)
    stop_servers.append(server)
    t0 = time.monotonic()
    scraper, pipeliner = _Conn(socket.socket(), 10.0), _Conn(socket.socket(), 10.0)
    for c in (scraper, pipeliner):
        server._conns[id(c)] = c
    # the scraper: connected 300 s ago, 20 scrapes of 1 MB each, now 0.1 s into its next response
    scraper.opened = t0 - 300
    scraper.requests, scraper.sent, scraper.idle_since = 20, 20_000_000, t0 - 15
    scraper.start_write(t0 - 0.1)
    scraper.sent += 400_000
    # the pipeliner: 2 MB into the kernel's buffers at once, then 3 KB/s for 3 s, one run of responses
    pipeliner.opened = t0 - 3
    pipeliner.start_write(t0 - 3)
    pipeliner.sent = 2_000_000 + 9_000
    with server._lock:
        assert server._evict_one()
    assert id(scraper) in server._conns and id(pipeliner) not in server._conns
    for c in (scraper, pipeliner):
        c.sock.close()
    server._conns.clear()


def test_a_busy_pool_never_remembers_good_credentials_as_wrong():
    """A check that found no room in the bcrypt pool knows nothing: it is refused, not cached as a
    failure nor charged to the address, so the same credentials pass once the pool is free."""
    from gpu_carbon_exporter.web import auth as webauth

    auth = webauth.BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(4))})
    good = "Basic " + base64.b64encode(b"prom:pw").decode()
    held = [auth._pool.acquire() for _ in range(webauth.BCRYPT_POOL)]
    wait, webauth.POOL_WAIT_S = webauth.POOL_WAIT_S, 0.05
    try:
        assert not auth.check(good, "10.0.0.1")
    finally:
        webauth.POOL_WAIT_S = wait
        for _ in held:
            auth._pool.release()
    assert auth.check(good, "10.0.0.1") and auth.check(good, "10.0.0.2")


def test_concurrent_failures_from_one_address_cannot_overdraw_its_budget():
    from gpu_carbon_exporter.web import auth as webauth

    auth = webauth.BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(6))})
    checked = []
    real = auth._bcrypt
    auth._bcrypt = lambda u, p: checked.append(p) or real(u, p)
    threads = [threading.Thread(target=auth.check, args=("Basic " + base64.b64encode(f"prom:x{i}".encode()).decode(),
                                                           "10.0.0.9")) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(checked) <= webauth.FAILURE_BURST + 1  # + what refills while they run
def test_a_pipelining_slow_reader_is_cut_when_its_write_budget_is_spent(clock, tmp_path, stop_servers):
    """Each response progresses within the deadline, but all of them together may hold the slot
    for about one deadline (1 s here, refilled at 10 % of wall time), not one deadline each."""
    server = serve_gpus(clock, 64, read_timeout_seconds=1.0)  # a 106-KB body
    stop_servers.append(server)
    stop = threading.Event()
    # 90 pipelined requests read at 150 KB/s: each response takes about 0.7 s, all of them a minute
    reader = Pipeliner(server.server_address[1], stop, requests_each=90, rate_bps=150_000)
    reader.start()
    try:
        wait_for(lambda: reader.received > 0 and server._conns, "the pipeliner is being answered")
        started = time.monotonic()
        wait_for(lambda: not server._conns, "the pipeliner's slot freed")
        held = time.monotonic() - started
    finally:
        stop.set()
        reader.join(timeout=5)
    assert held < 8, held


def test_a_connection_is_closed_after_its_request_cap(clock, tmp_path, stop_servers):
    from gpu_carbon_exporter.web import MAX_REQUESTS_PER_CONNECTION

    server, port = serve(clock, None, tmp_path)
    stop_servers.append(server)
    with requests.Session() as session:
        answers = [session.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
                   for _ in range(MAX_REQUESTS_PER_CONNECTION)]
    assert all(r.status_code == 200 for r in answers)
    assert answers[-1].headers["Connection"] == "close"
    assert all("Connection" not in r.headers for r in answers[:-1])


# -- wrong-password floods -----------------------------------------------------------------------------------
def auth_header(user: str, password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


def wrong_passwords(port: int, stop: threading.Event, source: str) -> None:
    """A client sending a new wrong password on every request, from its own loopback address."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + auth_header("prom", secrets.token_hex(8))
                          + b"Connection: close\r\n\r\n")
                while s.recv(4096):
                    pass
        except OSError:
            stop.wait(0.01)


@pytest.mark.parametrize("clients", [64, 200])
def test_good_scrapes_are_served_under_a_wrong_password_flood(clock, tmp_path, stop_servers, clients):
    """64 clients sending wrong passwords left 3/20 good scrapes (p50 4.5 s), 200 left none: every
    failure paid a full bcrypt. The scraper here was never verified before the flood began, so its
    first scrape needs a bcrypt check of its own."""
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode()
    server, port = serve(clock, f"basic_auth_users:\n  prom: '{hashed}'\n", tmp_path)
    stop_servers.append(server)
    stop = threading.Event()
    flood = [threading.Thread(target=wrong_passwords, args=(port, stop, "127.0.0.2"), daemon=True)
             for _ in range(clients)]
    for t in flood:
        t.start()
    try:
        wait_for(lambda: server.auth.refused >= 5 * clients, "the flood refused without bcrypt")
        times, codes = [], []
        for _ in range(20):
            t0 = time.monotonic()
            codes.append(requests.get(f"http://127.0.0.1:{port}/metrics", auth=("prom", "s3cret"),
                                      timeout=10).status_code)
            times.append(time.monotonic() - t0)
        refused_during = server.auth.refused
    finally:
        stop.set()
        for t in flood:
            t.join(timeout=5)
    assert codes == [200] * 20
    assert statistics.median(times) < 2.0, times  # before: p50 4.5 s at 64 clients, nothing at 200
    assert refused_during > 5 * clients  # the flood went on while the good scrapes were served


def test_a_failed_password_is_refused_from_the_cache_and_the_budget_runs_out():
    from gpu_carbon_exporter.web.auth import FAILURE_BURST, BasicAuth

    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(4))})

    def header(password: str) -> str:
        return "Basic " + base64.b64encode(f"prom:{password}".encode()).decode()

    assert not auth.check(header("wrong"), "10.0.0.1")
    assert not auth.check(header("wrong"), "10.0.0.1") and auth.refused == 1  # the failed-hash cache
    for i in range(FAILURE_BURST):
        auth.check(header(f"wrong{i}"), "10.0.0.1")
    assert auth.refused == 2  # the budget's last token went on a bcrypt, the next is refused outright
    assert not auth.check(header("pw"), "10.0.0.1") and auth.refused == 3
    assert auth.check(header("pw"), "10.0.0.2")  # another address has its own budget
    assert auth.check(header("pw"), "10.0.0.1")  # verified credentials pass from any address


# -- bcrypt cost ------------------------------------------------------------------------------------------------
HUGE_COST = "$2b$31$" + "a" * 53


def test_a_bcrypt_cost_of_31_is_refused_at_load(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prom: '{HUGE_COST}'\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"web.yml: basic_auth_users.prom: bcrypt cost 31 is outside 4-14"):
        load_web_config(path)
    assert time.monotonic() - started < 5


class _Records(logging.Handler):
    """The web module's log records, whatever an earlier test in this worker did to the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_watcher_refuses_a_huge_cost_and_still_reloads_later_changes(clock, tmp_path, stop_servers):
    records, web_log = _Records(), logging.getLogger("gpu_carbon_exporter.web")
    level = web_log.level
    web_log.addHandler(records)
    web_log.setLevel(logging.DEBUG)  # an earlier test's CLI may have raised the root logger's level
    try:
        _watcher_refuses_a_huge_cost(clock, tmp_path, stop_servers, records)
    finally:
        web_log.removeHandler(records)
        web_log.setLevel(level)


def _watcher_refuses_a_huge_cost(clock, tmp_path, stop_servers, records):
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    server, port = serve(clock, f"basic_auth_users:\n  prom: '{good}'\n", tmp_path)
    stop_servers.append(server)
    path = tmp_path / "web.yml"
    stop = threading.Event()
    watcher = threading.Thread(target=watch_web_config, args=(server, path, stop, 0.05), daemon=True)
    watcher.start()
    try:
        before = server.web
        # a size of its own: the watcher compares (mtime, size, inode), and an mtime can repeat within a tick
        path.write_text(f"# rotated\nbasic_auth_users:\n  prom: '{HUGE_COST}'\n")
        wait_for(lambda: any("bcrypt cost 31" in m for m in records.messages), "the refusal logged")
        assert server.web is before
        path.write_text("")  # the next change (auth off) is still picked up: the watcher did not hang
        wait_for(lambda: not server.web.users, "the later change reloaded")
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    finally:
        stop.set()
        watcher.join(timeout=5)


# -- framing and garbage ------------------------------------------------------------------------------------------
def exchange(port: int, raw: bytes) -> bytes:
    """Everything the server answers to ``raw`` until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize("lengths", [(b"0", b"40"), (b"0", b"0"), (b"40", b"0")])
def test_repeated_content_length_is_refused_and_the_connection_closed(clock, tmp_path, stop_servers, lengths):
    server, port = serve(clock, None, tmp_path)
    stop_servers.append(server)
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    out = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: " + lengths[0]
                   + b"\r\nContent-Length: " + lengths[1] + b"\r\n\r\n" + smuggled)
    assert out.startswith(b"HTTP/1.1 400 ")
    assert out.count(b"HTTP/1.") == 1  # the body was never answered as a second request


@pytest.mark.parametrize("line", [b"GET garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                                  b"HELLO", b"GET / HTTP/1.1 extra"])
def test_a_garbage_request_line_gets_a_plain_400_with_a_status_line(clock, tmp_path, stop_servers, line):
    server, port = serve(clock, None, tmp_path)
    stop_servers.append(server)
    out = exchange(port, line + b"\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 ") or head.startswith(b"HTTP/1.1 400 "), out[:200]
    assert b"Content-Type: text/plain" in head
    assert body.startswith(b"400 ") and b"<" not in body


def test_an_http09_request_is_answered_400_without_waiting_for_headers(clock, tmp_path, stop_servers):
    """A real HTTP/0.9 request has no header block: it must not wait out the 10-s head deadline."""
    server, port = serve(clock, None, tmp_path)
    stop_servers.append(server)
    started = time.monotonic()
    out = exchange(port, b"GET /\r\n")  # read until the server closes the connection
    assert time.monotonic() - started < 5  # well inside the 10-s head deadline it used to wait out
    assert out.startswith(b"HTTP/1.1 400 ") and out.endswith(b"400 Bad request syntax\n")


def test_a_change_made_before_the_watcher_starts_is_still_reloaded(clock, tmp_path, stop_servers):
    """The watcher compares with the files as they were when loaded, not when its thread first runs (on a
    busy machine a rotation could land in between and never be picked up)."""
    server, port = serve(clock, "http_server_config:\n  headers:\n    X-Test: one\n", tmp_path)
    stop_servers.append(server)
    path = tmp_path / "web.yml"
    path.write_text("http_server_config:\n  headers:\n    X-Test: two, rotated\n")  # before the watcher runs
    stop = threading.Event()
    watcher = threading.Thread(target=watch_web_config, args=(server, path, stop, 0.05), daemon=True)
    watcher.start()
    try:
        wait_for(lambda: server.web.headers.get("X-Test") == "two, rotated", "the earlier change reloaded")
    finally:
        stop.set()
        watcher.join(timeout=5)

"""HTTP endpoint: /metrics, /healthz and a landing page, with optional TLS,
mutual TLS and basic auth configured by an exporter-toolkit ``web-config.yml``.

Each connection gets its own thread and socket timeout, and the number of
connections is capped, so slow clients cannot starve scrapes. The TLS
handshake runs in the connection's thread, never in the accept loop.
"""
from __future__ import annotations

import gzip
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from prometheus_client.exposition import choose_encoder

from . import __version__
from .config import ConfigError, key_name, read_yaml, show
from .exposition import TEXT_CONTENT_TYPE, Exposition
from .webauth import MAX_BCRYPT_COST, MIN_BCRYPT_COST, BasicAuth, bcrypt_cost

log = logging.getLogger(__name__)

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
             "cipher_suites", "curve_preferences", "prefer_server_cipher_suites"}
# exporter-toolkit (Go crypto/tls) names of the TLS 1.2 suites -> OpenSSL names. Like Go, the list
# does not apply to TLS 1.3, whose suites are all safe.
_GO_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
}
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


@dataclass
class WebConfig:
    """The parsed ``web-config.yml``. ``ssl_context`` is None for plain HTTP."""

    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # The web config and the certificate files it names: a change to any is reloaded.
    files: list[Path] = field(default_factory=list)
    # Their (mtime, size, inode) taken before they were read: a change made while (or just after) they
    # were loaded is still a change to the watcher, however late its thread starts.
    signature: tuple | None = None


def load_web_config(path: str | Path | None) -> WebConfig:
    """Parse an exporter-toolkit web config; raises ConfigError naming file, key and reason."""
    if path is None:
        return WebConfig()
    path = Path(path)

    def fail(key: str, reason: str) -> None:
        raise ConfigError(f"{path}: {key}: {reason}")

    before = _signature([path])
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        fail("(top level)", "expected a mapping")
    for key in data:
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            fail(key_name(key), "unknown or unsupported key")
    cfg = WebConfig()
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        fail("basic_auth_users", "expected a mapping of user name to bcrypt hash")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            fail(f"basic_auth_users.{key_name(user)}", "expected a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")
        if not MIN_BCRYPT_COST <= bcrypt_cost(hashed) <= MAX_BCRYPT_COST:
            # each step doubles the work: cost 31 would take days per check and hang every scrape
            fail(f"basic_auth_users.{key_name(user)}", f"bcrypt cost {bcrypt_cost(hashed)} is outside "
                 f"{MIN_BCRYPT_COST}-{MAX_BCRYPT_COST} (each step doubles the time of every check; "
                 f"use e.g. htpasswd -nbBC 10 USER PASSWORD)")
        cfg.users[str(user)] = hashed.encode()
    http = data.get("http_server_config") or {}
    if not isinstance(http, dict):
        fail("http_server_config", "expected a mapping (keys: headers, http2)")
    for key, value in http.items():
        if key == "headers":
            if not isinstance(value, dict):
                fail("http_server_config.headers", "expected a mapping of header name to value")
            for k, v in value.items():
                if not isinstance(k, str) or not isinstance(v, (str, int, float)) or any(
                        c in f"{k}{v}" for c in "\r\n\0"):
                    fail(f"http_server_config.headers.{key_name(k)}", "expected one line of text (no CR, LF or NUL)")
            cfg.headers = {str(k): str(v) for k, v in value.items()}
        elif key != "http2":
            fail(f"http_server_config.{key_name(key)}", "unknown or unsupported key")
    cfg.files = [path]
    tls = data.get("tls_server_config")
    if tls:
        certs = [path.parent / tls[k] for k in ("cert_file", "key_file", "client_ca_file")
                 if isinstance(tls, dict) and isinstance(tls.get(k), str) and tls.get(k)]
        before += _signature(certs)
        cfg.ssl_context = _ssl_context(tls, fail, path.parent)
        cfg.files += certs
    cfg.signature = before
    return cfg


def _ssl_context(tls: Any, fail: Callable[[str, str], None], base: Path) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        fail("tls_server_config", "expected a mapping")
    for key in tls:
        if key not in _TLS_KEYS:
            fail(f"tls_server_config.{key_name(key)}", f"unknown or unsupported key; supported: "
                 f"{', '.join(sorted(_TLS_KEYS))}")
    for key in ("cert_file", "key_file", "client_ca_file", "min_version", "max_version", "client_auth_type"):
        if key in tls and not isinstance(tls[key], str):
            fail(f"tls_server_config.{key}", f"expected a string, got {show(tls[key])}")
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            fail(f"tls_server_config.{key}", "required when tls_server_config is set")
    resolve = lambda p: str(base / p)  # noqa: E731 - relative paths are relative to the web config
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for key in ("cert_file", "key_file"):
        if not Path(resolve(tls[key])).is_file():
            fail(f"tls_server_config.{key}", f"cannot load certificate/key: {resolve(tls[key])}: no such file")
    try:
        ctx.load_cert_chain(resolve(tls["cert_file"]), resolve(tls["key_file"]))
    except (OSError, ssl.SSLError) as err:
        fail("tls_server_config.cert_file", f"cannot load certificate/key {resolve(tls['cert_file'])} / "
             f"{resolve(tls['key_file'])}: {getattr(err, 'strerror', None) or err}")
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in tls:
            if tls[key] not in _TLS_VERSIONS:
                fail(f"tls_server_config.{key}", f"must be one of {', '.join(_TLS_VERSIONS)}")
            setattr(ctx, attr, _TLS_VERSIONS[tls[key]])
    if ctx.maximum_version != ssl.TLSVersion.MAXIMUM_SUPPORTED and ctx.minimum_version > ctx.maximum_version:
        fail("tls_server_config.min_version", f"{tls.get('min_version', 'TLS12')} is above max_version "
             f"{tls['max_version']}: no client could connect")
    _ciphers(ctx, tls, fail)
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        fail("tls_server_config.client_auth_type",
             f"{auth!r} not supported; use one of {', '.join(_CLIENT_AUTH)}")
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if ctx.verify_mode != ssl.CERT_NONE:
        if not tls.get("client_ca_file"):
            fail("tls_server_config.client_ca_file", f"required for client_auth_type {auth}")
        try:
            ctx.load_verify_locations(resolve(tls["client_ca_file"]))
        except (OSError, ssl.SSLError) as err:
            fail("tls_server_config.client_ca_file", f"cannot load: {err}")
    return ctx


def _ciphers(ctx: ssl.SSLContext, tls: dict[str, Any], fail: Callable[[str, str], None]) -> None:
    """exporter-toolkit's cipher keys: suites applied (TLS 1.2), curve preferences accepted with a warning."""
    suites = tls.get("cipher_suites")
    if suites is not None:
        if not isinstance(suites, list) or not suites or any(not isinstance(s, str) or s not in _GO_CIPHERS
                                                             for s in suites):
            bad = [s for s in suites if not isinstance(s, str) or s not in _GO_CIPHERS] \
                if isinstance(suites, list) else suites
            fail("tls_server_config.cipher_suites", f"unknown or insecure suite(s) {show(bad)}; supported: "
                 + ", ".join(_GO_CIPHERS))
        ctx.set_ciphers(":".join(_GO_CIPHERS[s] for s in suites))
    if tls.get("prefer_server_cipher_suites"):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.get("curve_preferences"):
        log.warning("tls_server_config.curve_preferences is accepted but not applied: Python's ssl module "
                    "cannot set a curve list; OpenSSL's defaults (X25519, P-256, P-384, ...) are used")


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header allows gzip (``gzip;q=0`` and ``*;q=0`` forbid it)."""
    gz = star = None
    for item in (header or "").split(","):
        coding, *params = [p.strip() for p in item.split(";")]
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding.lower() in ("gzip", "x-gzip"):
            gz = q
        elif coding == "*":
            star = q
    if gz is not None:
        return gz > 0
    return star is not None and star > 0


def negotiate(accept: str | None) -> tuple[str, str]:
    """(format, content type) for an Accept header: ``text``, ``openmetrics`` (our fast encoder), or
    ``client`` where a name escaping our encoder does not do (``dots``, ``values``) was asked for."""
    try:
        _, ctype = choose_encoder(accept or "")
    except Exception:  # noqa: BLE001 - a malformed header (version=abc) gets the classic format
        return "text", TEXT_CONTENT_TYPE
    if "escaping=dots" in ctype or "escaping=values" in ctype:
        return "client", ctype
    return ("openmetrics" if ctype.startswith("application/openmetrics-text") else "text"), ctype


LANDING = """<!doctype html><html><head><title>gpu-carbon-exporter</title></head><body>
<h1>gpu-carbon-exporter {version}</h1>
<p>GPU energy, power and carbon emissions for Prometheus.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li></ul>
</body></html>"""
# Pending connections the kernel queues before accept (capped by net.core.somaxconn): sized for a
# burst of scrapers and health checks reconnecting at once, far above the connection cap.
LISTEN_BACKLOG = 1024


# A connection may spend at most read_timeout_seconds writing responses back to back (pipelined or
# not): its write budget refills at WRITE_DUTY of wall time, so a scraper, whose writes take
# milliseconds every scrape interval, never runs out, while a client pipelining requests and reading
# slowly is cut once the budget is spent, however much each single response progresses.
WRITE_DUTY = 0.1
# Requests on one connection: the last response says "Connection: close" (the client reconnects).
MAX_REQUESTS_PER_CONNECTION = 100
# A connection busy writing may be evicted for a new one once its current run of responses (those
# written back to back, without waiting for the client) has lasted this long: a response that has
# just begun, a keep-alive scraper's included, is not cut for the next comer.
EVICTABLE_AFTER_S = 0.5
# A wait for the next request head shorter than this is pipelining: the run of responses goes on.
PIPELINED_S = 0.05
WRITE_CHUNK = 64 * 1024  # bytes written at a time, so progress is seen while a slow reader reads


class _Conn:
    """One connection's phase, deadline, write budget and progress, enforced by the server."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        now = time.monotonic()
        self.sock, self.timeout, self.phase = sock, timeout, "head"
        self.deadline, self.opened, self.idle_since = now + timeout, now, now
        self.sent = self.requests = 0
        self.budget, self.budget_at, self.write_started = timeout, now, now
        self.run_started, self.run_sent = now, 0  # the current run of back-to-back responses

    def start_head(self, now: float) -> None:
        """Waiting for the client's next request head (a fresh deadline: the client is the slow one)."""
        if self.phase == "write":
            self.budget -= now - self.write_started
            self.budget_at = now
        self.phase, self.deadline, self.idle_since = "head", now + self.timeout, now

    def start_write(self, now: float) -> None:
        """Answering a request: the deadline is what is left of the write budget, never renewed per response."""
        self.budget = min(self.timeout, self.budget + (now - self.budget_at) * WRITE_DUTY)
        if self.requests == 0 or now - self.idle_since > PIPELINED_S:  # the client waited for us: a new run
            self.run_started, self.run_sent = now, self.sent
        self.budget_at, self.write_started, self.phase = now, now, "write"
        self.requests += 1
        self.deadline = now + max(0.0, self.budget)

    def run_age(self, now: float) -> float:
        return now - self.run_started

    def progress(self, now: float) -> float:
        """Bytes written per second in the current run of responses (not since the connection opened:
        a keep-alive scraper idles between scrapes, and its average would look slow)."""
        return (self.sent - self.run_sent) / max(self.run_age(now), EVICTABLE_AFTER_S)

    def cut(self) -> None:
        try:
            # The plain socket's shutdown, also for a TLS socket (SSLSocket.shutdown would speak TLS):
            # the handler's blocked read, write or handshake returns at once.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _RateLimitedLog:
    """At most one warning per ``every_s`` for a repeated event, with the count in between."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s, self._last, self._count = every_s, -float("inf"), 0
        self._lock = threading.Lock()

    def event(self, message: str) -> None:
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if now - self._last < self.every_s:
                return
            count, self._count, self._last = self._count, 0, now
        log.warning("%s (%d time(s) since the last such message)", message, count)


class ExporterServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once, every phase under a deadline.

    A connection's request head (TLS handshake included, and a keep-alive connection's wait
    for its next request) must arrive within ``read_timeout_seconds``; all the responses it is
    written back to back share one budget of ``read_timeout_seconds`` (``WRITE_DUTY``), and it
    gets at most ``MAX_REQUESTS_PER_CONNECTION`` of them. When every slot is taken, the connection
    that has waited longest for its request head is closed to make room or, when all are busy
    writing, the one that has made the least progress for the time it has held its slot, so a
    flood of slow, idle or pipelining connections cannot lock scrapes or /healthz out."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], collector: Any, web: WebConfig,
                 health: Callable[[], tuple[bool, str]], *, read_timeout_seconds: float = 10.0,
                 max_connections: int = 64) -> None:
        self.exposition = Exposition(collector)
        self.web, self.health = web, health
        self.read_timeout_seconds, self.max_connections = read_timeout_seconds, max_connections
        self.auth = BasicAuth(web.users)
        self._conns: dict[int, _Conn] = {}  # id(conn) -> conn
        self._starting: dict[int, _Conn] = {}  # id(raw socket) -> conn, until its thread takes it
        self._lock = threading.Lock()
        self._local = threading.local()
        self._refused = _RateLimitedLog()
        self._evicted = _RateLimitedLog()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._stop_watchdog = threading.Event()
        self._conn_opened = threading.Event()  # wakes the watchdog, which sleeps while there is no connection
        super().__init__(address, _Handler)
        threading.Thread(target=self._watchdog, name="http-deadlines", daemon=True).start()

    def reload_web(self, web: WebConfig) -> None:
        """Swap in a new web config; connections already open finish with the old one."""
        self.web, self.auth = web, BasicAuth(web.users)

    def server_close(self) -> None:
        self._stop_watchdog.set()
        self._conn_opened.set()
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that stalled past its deadline or hung up is routine, not a traceback on stderr."""
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._conns) >= self.max_connections and not self._evict_one():
                self._refused.event(f"connection limit ({self.max_connections}) reached with every connection "
                                    f"busy, refusing {client_address[0]}")
                self.shutdown_request(request)
                return
            conn = _Conn(request, self.read_timeout_seconds)
            self._conns[id(conn)] = conn
            self._conn_opened.set()
            self._starting[id(request)] = conn  # handed to the connection's thread
        super().process_request(request, client_address)

    def _evict_one(self) -> bool:
        """Make room for a new connection (called with the lock held): close the one waiting longest
        for its request head or, when all are busy, the one with the least progress per second held."""
        now = time.monotonic()
        waiting = [c for c in self._conns.values() if c.phase == "head"]
        if waiting:
            victim = min(waiting, key=lambda c: c.idle_since)
        else:
            held = [c for c in self._conns.values() if c.run_age(now) >= EVICTABLE_AFTER_S]
            if not held:
                return False
            victim = min(held, key=lambda c: (c.progress(now), c.run_started))
        del self._conns[id(victim)]
        victim.cut()
        self._evicted.event("connection limit reached: closed the connection idle the longest or "
                            "making the least progress")
        return True

    def start_head(self) -> None:
        """The current connection waits for its next request head."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.start_head(time.monotonic())

    def start_write(self) -> bool:
        """The current connection starts a response; False when it is the connection's last."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return True
        conn.start_write(time.monotonic())
        return conn.requests < MAX_REQUESTS_PER_CONNECTION

    def wrote(self, n: int) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.sent += n

    def _watchdog(self) -> None:
        while not self._stop_watchdog.is_set():
            with self._lock:
                idle = not self._conns
                if idle:
                    self._conn_opened.clear()
            if idle:  # nothing to cut: no ticks until a connection opens (an idle exporter stays asleep)
                self._conn_opened.wait()
                continue
            if self._stop_watchdog.wait(0.1):
                return
            now = time.monotonic()
            with self._lock:
                late = [c for c in self._conns.values() if now > c.deadline]
            for conn in late:
                conn.cut()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._lock:
            conn = self._local.conn = self._starting.pop(id(request), None)
        try:
            request.settimeout(self.read_timeout_seconds)
            if self.web.ssl_context is not None:
                try:
                    request = self.web.ssl_context.wrap_socket(request, server_side=True,
                                                               do_handshake_on_connect=False)
                    if conn is not None:
                        conn.sock = request  # the watchdog cuts the TLS socket, handshake included
                    request.do_handshake()
                except (ssl.SSLError, OSError) as err:
                    log.debug("TLS handshake with %s failed: %s", client_address, err)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                if conn is not None:
                    self._conns.pop(id(conn), None)
            self._local.conn = None


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    server_version = f"gpu-carbon-exporter/{__version__}"
    sys_version = ""  # no Python version in the Server header
    disable_nagle_algorithm = True  # headers and body are two writes: avoid a 40-ms delayed-ACK stall

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    # Every error answer has a status line and a plain body: the base class's default version is
    # HTTP/0.9, whose answers are a bare HTML page, and it echoes the request line into it.
    default_request_version = "HTTP/1.0"
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = "text/plain; charset=utf-8"

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        super().send_error(code, None if message is None else message.split(" (", 1)[0], "")

    def handle_one_request(self) -> None:
        self.server.start_head()
        super().handle_one_request()

    def parse_request(self) -> bool:
        if len(self.raw_requestline.split()) == 2:
            # HTTP/0.9 ("GET /"): refused before the base class, which would wait for headers it never gets
            self.command, self.request_version, self.close_connection = None, "HTTP/1.0", True
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            self.send_error(400, "Bad request syntax")
            return False
        if not super().parse_request():
            return False
        if not self._no_body():
            return False
        if not self.server.start_write():
            self.close_connection = True
        return True

    def _no_body(self) -> bool:
        """This endpoint takes no request body: one is refused (and the connection closed), never read
        slowly into a slot and never taken for the next request. Framing headers given twice are
        refused too (RFC 9112 6.3): a server and a proxy in front of it could read them differently."""
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get_all("Transfer-Encoding") or len(lengths) > 1 or \
                (lengths and lengths[0].strip() != "0"):
            self.send_error(400, "request bodies and repeated framing headers are not accepted here")
            self.close_connection = True
            return False
        return True

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**self.server.web.headers, **(extra or {})}.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            view = memoryview(body)
            for start in range(0, len(view), WRITE_CHUNK):
                chunk = view[start:start + WRITE_CHUNK]
                self.wfile.write(chunk)
                self.server.wrote(len(chunk))

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        # /healthz says only ok or what is wrong, never a metric: it answers without credentials, so
        # the kubelet's and Docker's probes work with basic auth on (TLS still applies).
        if path != "/healthz" and not self.server.auth.check(self.headers.get("Authorization"),
                                                                 self.client_address[0]):
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Basic realm="gpu-carbon-exporter"'})
            return
        if path == "/metrics":
            fmt, ctype = negotiate(self.headers.get("Accept"))
            compress = accepts_gzip(self.headers.get("Accept-Encoding"))
            if fmt == "client":  # rare: prometheus_client's own encoder, which escapes names as asked
                body = choose_encoder(self.headers.get("Accept", ""))[0](self.server.exposition.collector)
                body = gzip.compress(body, compresslevel=1) if compress else body
            else:
                body = self.server.exposition.body(fmt == "openmetrics", compress)
            extra = {"Vary": "Accept, Accept-Encoding"}
            if compress:
                extra["Content-Encoding"] = "gzip"
            self._send(200, body, ctype, extra)
        elif path == "/healthz":
            ok, text = self.server.health()
            self._send(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, LANDING.format(version=__version__).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8")


def _signature(files: list[Path]) -> tuple:
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def reload(server: ExporterServer, path: str | Path | None, why: str) -> bool:
    """Re-read the web config (TLS certificates, users, headers) into a running server. A broken
    file is logged and the running config kept; counters and state are never touched."""
    try:
        server.reload_web(load_web_config(path))
    except Exception as err:  # noqa: BLE001 - a bad reload must never stop a running exporter
        log.error("%s: web config reload failed, keeping the running config: %s", why, err)
        return False
    log.info("%s: reloaded the web config%s", why, f" from {path}" if path else "")
    return True


def watch_web_config(server: ExporterServer, path: str | Path, stop: threading.Event,
                     interval_s: float = 5.0) -> None:
    """Reload the web config when it or a certificate it names changes (cert-manager rotates
    them in place)."""
    seen = server.web.signature or _signature(server.web.files)
    while not stop.wait(interval_s):
        now = _signature(server.web.files)
        if now != seen:
            if reload(server, path, "web config or certificate changed"):
                seen = server.web.signature or _signature(server.web.files)
            else:  # a broken file: tried again at its next change
                seen = now


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` -> (host, port); raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("must be host:port, :port or [v6addr]:port")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {int(port)} is out of range (0-65535)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def format_address(host: str, port: int) -> str:
    """host:port, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

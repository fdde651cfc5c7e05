"""HTTP endpoint: /metrics, /healthz and a landing page, with optional TLS,
mutual TLS and basic auth configured by an exporter-toolkit ``web-config.yml``.

Each connection gets its own thread and socket timeout, and the number of
connections is capped, so slow clients cannot starve scrapes. The TLS
handshake runs in the connection's thread, never in the accept loop.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import yaml
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.registry import CollectorRegistry

from . import __version__
from .config import ConfigError
from .exposition import render_text

log = logging.getLogger(__name__)

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
# A valid hash of a random password, checked for unknown users so timing does not reveal user names.
_DUMMY_HASH = b"$2b$10$hgBl4VtSaZi785VH0nBnpePXuZIIjtvgYsA4wm0Ya/kseQosg3Xoq"


@dataclass
class WebConfig:
    """The parsed ``web-config.yml``. ``ssl_context`` is None for plain HTTP."""

    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def load_web_config(path: str | Path | None) -> WebConfig:
    """Parse an exporter-toolkit web config; raises ConfigError naming file, key and reason."""
    if path is None:
        return WebConfig()
    path = Path(path)

    def fail(key: str, reason: str) -> None:
        raise ConfigError(f"{path}: {key}: {reason}")

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        fail("(top level)", "expected a mapping")
    for key in data:
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            fail(key, "unknown or unsupported key")
    cfg = WebConfig()
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        fail("basic_auth_users", "expected a mapping of user name to bcrypt hash")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            fail(f"basic_auth_users.{user}", "expected a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")
        cfg.users[str(user)] = hashed.encode()
    http = data.get("http_server_config") or {}
    for key, value in http.items():
        if key == "headers" and isinstance(value, dict):
            cfg.headers = {str(k): str(v) for k, v in value.items()}
        elif key != "http2":
            fail(f"http_server_config.{key}", "unknown or unsupported key")
    tls = data.get("tls_server_config")
    if tls:
        cfg.ssl_context = _ssl_context(tls, fail, path.parent)
    return cfg


def _ssl_context(tls: Any, fail: Callable[[str, str], None], base: Path) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        fail("tls_server_config", "expected a mapping")
    for key in tls:
        if key not in _TLS_KEYS:
            fail(f"tls_server_config.{key}", f"unknown or unsupported key; supported: {', '.join(sorted(_TLS_KEYS))}")
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            fail(f"tls_server_config.{key}", "required when tls_server_config is set")
    resolve = lambda p: str(base / p)  # noqa: E731 - relative paths are relative to the web config
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(resolve(tls["cert_file"]), resolve(tls["key_file"]))
    except (OSError, ssl.SSLError) as err:
        fail("tls_server_config.cert_file", f"cannot load certificate/key: {err}")
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in tls:
            if tls[key] not in _TLS_VERSIONS:
                fail(f"tls_server_config.{key}", f"must be one of {', '.join(_TLS_VERSIONS)}")
            setattr(ctx, attr, _TLS_VERSIONS[tls[key]])
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


class _Auth:
    """bcrypt basic auth with a small cache of verified credentials (bcrypt is slow on purpose)."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._ok: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            if key in self._ok:
                return True
        import bcrypt  # noqa: PLC0415 - only needed with basic auth

        hashed = self.users.get(user)
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
        except ValueError:  # e.g. a password longer than bcrypt's 72 bytes
            ok = False
        if ok:
            with self._lock:
                if len(self._ok) > 1024:
                    self._ok.clear()
                self._ok.add(key)
        return ok


LANDING = """<!doctype html><html><head><title>gpu-carbon-exporter</title></head><body>
<h1>gpu-carbon-exporter {version}</h1>
<p>GPU energy, power and carbon emissions for Prometheus.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li></ul>
</body></html>"""


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, web: WebConfig,
                 health: Callable[[], tuple[bool, str]], *, read_timeout_s: float = 10.0,
                 max_connections: int = 64) -> None:
        self.registry, self.web, self.health = registry, web, health
        self.read_timeout_s = read_timeout_s
        self.auth = _Auth(web.users)
        self._slots = threading.BoundedSemaphore(max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that stalled past its timeout or hung up is routine, not a traceback on stderr."""
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("connection limit reached, refusing %s", client_address)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(self.read_timeout_s)
            if self.web.ssl_context is not None:
                try:
                    request = self.web.ssl_context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as err:
                    log.debug("TLS handshake with %s failed: %s", client_address, err)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: avoid a 40-ms delayed-ACK stall

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**self.server.web.headers, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not self.server.auth.check(self.headers.get("Authorization")):
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Basic realm="gpu-carbon-exporter"'})
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
            body = render_text(self.server.registry) if encoder is generate_latest else encoder(self.server.registry)
            extra = {}
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                body, extra = gzip.compress(body, compresslevel=1), {"Content-Encoding": "gzip"}
            self._send(200, body, ctype, extra)
        elif path == "/healthz":
            ok, text = self.server.health()
            self._send(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, LANDING.format(version=__version__).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8")


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` -> (host, port); raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {value!r} must be host:port, :port or [v6addr]:port")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)

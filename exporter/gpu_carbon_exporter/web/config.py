"""The exporter-toolkit ``web-config.yml``: TLS (and mutual TLS), basic auth users and response
headers, checked by the schema engine, and reloaded into a running server when it or a
certificate it names changes (cert-manager rotates certificates in place).

Every problem is one ConfigError naming the file, the dotted key and the reason; the first stops
the reading (a TLS context cannot be built past a missing certificate).
"""
from __future__ import annotations

import logging
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from ..schema import Invalid, Problems, checked, key_name, show
from ..yamlio import read_yaml
from .auth import MAX_BCRYPT_COST, MIN_BCRYPT_COST, bcrypt_cost

if TYPE_CHECKING:
    from .server import ExporterServer

log = logging.getLogger(__package__)

Fail = Callable[[str, str], NoReturn]  # (dotted key, reason): raises the file's ConfigError

_SECTIONS = ("tls_server_config", "basic_auth_users", "http_server_config")
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
             "cipher_suites", "curve_preferences", "prefer_server_cipher_suites"}
_TLS_STRINGS = ("cert_file", "key_file", "client_ca_file", "min_version", "max_version", "client_auth_type")
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
    fail: Fail = Problems(str(path)).fail
    before = signature([path])
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        fail("(top level)", "expected a mapping")
    for key in data:
        if key not in _SECTIONS:
            fail(key_name(key), "unknown or unsupported key")
    cfg = WebConfig(users=_users(data.get("basic_auth_users") or {}, fail),
                    headers=_headers(data.get("http_server_config") or {}, fail), files=[path])
    tls = data.get("tls_server_config")
    if tls:
        certs = [path.parent / tls[k] for k in ("cert_file", "key_file", "client_ca_file")
                 if isinstance(tls, dict) and isinstance(tls.get(k), str) and tls.get(k)]
        before += signature(certs)
        cfg.ssl_context = _ssl_context(tls, fail, path.parent)
        cfg.files += certs
    cfg.signature = before
    return cfg


def _users(users: Any, fail: Fail) -> dict[str, bytes]:
    """``basic_auth_users``: user name -> bcrypt hash of a cost every check can afford."""
    if not isinstance(users, dict):
        fail("basic_auth_users", "expected a mapping of user name to bcrypt hash")
    out = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            fail(f"basic_auth_users.{key_name(user)}", "expected a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")
        if not MIN_BCRYPT_COST <= bcrypt_cost(hashed) <= MAX_BCRYPT_COST:
            # each step doubles the work: cost 31 would take days per check and hang every scrape
            fail(f"basic_auth_users.{key_name(user)}", f"bcrypt cost {bcrypt_cost(hashed)} is outside "
                 f"{MIN_BCRYPT_COST}-{MAX_BCRYPT_COST} (each step doubles the time of every check; "
                 f"use e.g. htpasswd -nbBC 10 USER PASSWORD)")
        out[str(user)] = hashed.encode()
    return out


def _headers(http: Any, fail: Fail) -> dict[str, str]:
    """``http_server_config``: the headers added to every response (``http2`` accepted, unused)."""
    if not isinstance(http, dict):
        fail("http_server_config", "expected a mapping (keys: headers, http2)")
    headers: dict[str, str] = {}
    for key, value in http.items():
        if key == "headers":
            if not isinstance(value, dict):
                fail("http_server_config.headers", "expected a mapping of header name to value")
            for k, v in value.items():
                if not isinstance(k, str) or not isinstance(v, (str, int, float)) or any(
                        c in f"{k}{v}" for c in "\r\n\0"):
                    fail(f"http_server_config.headers.{key_name(k)}", "expected one line of text (no CR, LF or NUL)")
            headers = {str(k): str(v) for k, v in value.items()}
        elif key != "http2":
            fail(f"http_server_config.{key_name(key)}", "unknown or unsupported key")
    return headers


def _ssl_context(tls: Any, fail: Fail, base: Path) -> ssl.SSLContext:
    """``tls_server_config`` as a server context (TLS 1.2 at least unless told otherwise); relative
    paths are relative to the web config."""
    _check_tls_keys(tls, fail)
    resolve: Callable[[str], str] = lambda p: str(base / p)  # noqa: E731
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_cert(ctx, tls, fail, resolve)
    _versions(ctx, tls, fail)
    _ciphers(ctx, tls, fail)
    _client_auth(ctx, tls, fail, resolve)
    return ctx


def _check_tls_keys(tls: Any, fail: Fail) -> None:
    if not isinstance(tls, dict):
        fail("tls_server_config", "expected a mapping")
    for key in tls:
        if key not in _TLS_KEYS:
            fail(f"tls_server_config.{key_name(key)}", f"unknown or unsupported key; supported: "
                 f"{', '.join(sorted(_TLS_KEYS))}")
    for key in _TLS_STRINGS:
        if key in tls:
            try:
                checked(tls[key], str)
            except Invalid as bad:
                fail(f"tls_server_config.{key}", bad.reason)
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            fail(f"tls_server_config.{key}", "required when tls_server_config is set")


def _load_cert(ctx: ssl.SSLContext, tls: dict[str, Any], fail: Fail, resolve: Callable[[str], str]) -> None:
    for key in ("cert_file", "key_file"):
        if not Path(resolve(tls[key])).is_file():
            fail(f"tls_server_config.{key}", f"cannot load certificate/key: {resolve(tls[key])}: no such file")
    try:
        ctx.load_cert_chain(resolve(tls["cert_file"]), resolve(tls["key_file"]))
    except (OSError, ssl.SSLError) as err:
        fail("tls_server_config.cert_file", f"cannot load certificate/key {resolve(tls['cert_file'])} / "
             f"{resolve(tls['key_file'])}: {getattr(err, 'strerror', None) or err}")


def _versions(ctx: ssl.SSLContext, tls: dict[str, Any], fail: Fail) -> None:
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in tls:
            if tls[key] not in _TLS_VERSIONS:
                fail(f"tls_server_config.{key}", f"must be one of {', '.join(_TLS_VERSIONS)}")
            setattr(ctx, attr, _TLS_VERSIONS[tls[key]])
    if ctx.maximum_version != ssl.TLSVersion.MAXIMUM_SUPPORTED and ctx.minimum_version > ctx.maximum_version:
        fail("tls_server_config.min_version", f"{tls.get('min_version', 'TLS12')} is above max_version "
             f"{tls['max_version']}: no client could connect")


def _ciphers(ctx: ssl.SSLContext, tls: dict[str, Any], fail: Fail) -> None:
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


def _client_auth(ctx: ssl.SSLContext, tls: dict[str, Any], fail: Fail, resolve: Callable[[str], str]) -> None:
    """Mutual TLS: which client certificates are asked for, and the CA that must have signed them."""
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


# -- reloading ------------------------------------------------------------------------------------

def signature(files: list[Path]) -> tuple:
    """(mtime, size, inode) of each file, None for one that cannot be read: a change to any is a reload."""
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
    seen = server.web.signature or signature(server.web.files)
    while not stop.wait(interval_s):
        now = signature(server.web.files)
        if now != seen:
            if reload(server, path, "web config or certificate changed"):
                seen = server.web.signature or signature(server.web.files)
            else:  # a broken file: tried again at its next change
                seen = now

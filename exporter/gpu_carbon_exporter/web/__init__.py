"""HTTP endpoint: /metrics, /healthz and a landing page, with optional TLS, mutual TLS and basic
auth configured by an exporter-toolkit ``web-config.yml``.

- ``config.py``: the web config (TLS context, users, headers), its signature and reload watcher;
- ``auth.py``: bcrypt basic auth whose work an attacker cannot multiply;
- ``server.py``: the threaded server, its connection slots, deadlines, write budgets and eviction;
- ``handler.py``: the request handler (routes, content negotiation).

This face re-exports what the CLI, start-up and the tests use.
"""
from __future__ import annotations

from ..address import format_address, parse_listen_address
from .auth import BasicAuth
from .config import WebConfig, load_web_config, reload, watch_web_config
from .handler import LANDING, accepts_gzip, negotiate
from .server import EVICTABLE_AFTER_S, LISTEN_BACKLOG, MAX_REQUESTS_PER_CONNECTION, WRITE_DUTY, ExporterServer

__all__ = [
    "EVICTABLE_AFTER_S", "LANDING", "LISTEN_BACKLOG", "MAX_REQUESTS_PER_CONNECTION", "WRITE_DUTY", "BasicAuth",
    "ExporterServer", "WebConfig", "accepts_gzip", "format_address", "load_web_config", "negotiate",
    "parse_listen_address", "reload", "watch_web_config",
]

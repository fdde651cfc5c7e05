"""Listen addresses: ``host:port``, ``:port`` or ``[v6]:port``, parsed and written back.

Used by the config schema (``web.listen_address``) and by the CLI that binds the server, so it
sits below both.
"""
from __future__ import annotations


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


def listen_address_problem(value: str) -> str | None:
    """A schema check (``schema.Check``): why ``value`` is no listen address, or None."""
    try:
        parse_listen_address(value)
    except ValueError as err:
        return str(err)
    return None

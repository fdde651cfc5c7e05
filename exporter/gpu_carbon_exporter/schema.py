"""Config schema building blocks, shared by the core config and every plug-in's own keys.

A schema maps a key to ``(type, default, check)`` (``default`` ``...`` means required, ``None``
optional) or to a nested schema. ``check`` returns the reason a value is wrong, or None.
"""
from __future__ import annotations

import reprlib
from typing import Any, Callable
from urllib.parse import urlsplit

Check = Callable[[Any], "str | None"]
Spec = tuple  # (type, default, check | None)

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong = 2, 4, 4, 60, 60, 40


def show(value: Any) -> str:
    """A bounded rendering of a config value for error messages (a YAML alias bomb stays short)."""
    return _SHOW.repr(value)


def key_name(key: Any) -> str:
    """A mapping key for a dotted path: short strings as they are, anything else bounded."""
    return key if isinstance(key, str) and len(key) <= 60 and key.isprintable() else show(key)


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def between(lo: float, hi: float, *, open_lo: bool = False, hint: str = "") -> Callable[[float], str | None]:
    def check(v: float) -> str | None:
        if (v <= lo if open_lo else v < lo) or v > hi:
            return f"must be in {check.range}{hint}"
        return None
    check.range = f"{'(' if open_lo else '['}{_num(lo)}, {_num(hi)}]"  # type: ignore[attr-defined]
    return check


def documented_type(spec: tuple) -> str:
    """The type column of docs/configuration.md for a schema entry: kind and bounds."""
    kind, _, check = spec
    name = {str: "string", int: "integer", float: "number", bool: "bool", dict: "map"}[kind]
    bounds = getattr(check, "range", None)
    return f"{name} in {bounds}" if bounds else name


def leaf_keys(schema: dict[str, Any], prefix: str = "") -> dict[str, Spec]:
    """Every leaf key of a schema, dotted."""
    out = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            out.update(leaf_keys(spec, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = spec
    return out


def positive(hi: float) -> Callable[[float], str | None]:
    return between(0, hi, open_lo=True)


def at_least(lo: float, hi: float = 1e9) -> Callable[[float], str | None]:
    return between(lo, hi)


def names(what: str) -> Callable[[list], str | None]:
    """A list of non-empty strings (driver names, interface names)."""
    return lambda v: None if all(isinstance(x, str) and x for x in v) else f"expected a list of {what}"


def http_url(value: str) -> str | None:
    """An http:// or https:// URL with a host and, if given, a port in [1, 65535]."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host (http://HOST[:PORT][/PATH])"
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port is not None and not 1 <= port <= 65535:
        return "the port must be a number in [1, 65535]"
    return None


def not_empty(value: str) -> str | None:
    return "must not be empty (leave the key out instead)" if not value.strip() else None


def one_of(*choices: str) -> Callable[[str], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


hz = between(10, 1000)


HOUR, DAY = 3600.0, 86400.0



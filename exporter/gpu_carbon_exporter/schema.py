"""The one schema engine: every file an operator writes (the config, the web config, a scenario,
a budgets file) and the saved state are checked by it, so a wrong value is worded, located and
reported the same way everywhere.

A schema maps a key to ``(type, default, check)`` (``default`` ``...`` means required, ``None``
optional) or to a nested schema. ``check`` returns the reason a value is wrong, or None; the
checks below (``between``, ``positive``, ``one_of`` ...) carry their bounds for the docs.

The public API, bottom up:

- ``checked(value, kind, check, wording)``: one value converted and checked, or ``Invalid``;
- ``Problems``: the problems of one file, each ``file: dotted.key: reason``, raised together
  (``raise_if_any``) or at the first (``fail``);
- ``validate(data, schema, source)``: a whole mapping, defaults filled in, every problem found;
- ``Section`` / ``typed``: the validated mapping as frozen dataclasses (attribute access).

Readers whose messages were worded differently before this engine keep their words through a
``Wording`` (what a type is called, where the offending value goes).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import reprlib
from dataclasses import dataclass
from typing import Any, Callable, NoReturn
from urllib.parse import urlsplit

from .errors import ConfigError

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


# -- wording --------------------------------------------------------------------------------------

def type_name(kind: type) -> str:
    """A type as the configuration's messages name it ("a number")."""
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a mapping", list: "a list"}[kind]


@dataclass(frozen=True)
class Wording:
    """How one reader words a wrong value: ``kind`` names a type, ``wrong_type`` says a value is
    of the wrong type, ``reason`` adds the given value to any other reason (a failed check, a
    number that is not finite or too large)."""

    kind: Callable[[Any], str] = type_name
    wrong_type: str = "expected {kind}, got {value}"
    reason: str = "{reason} (got {value})"


CONFIG_WORDING = Wording()


class Invalid(ValueError):
    """One value is wrong; ``reason`` is worded for the message (without the file and key)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def checked(value: Any, kind: type | tuple[type, ...], check: Check | None = None,
            wording: Wording = CONFIG_WORDING) -> Any:
    """``value`` if it is a ``kind`` (an integer where a float is wanted becomes one; a bool is never
    a number), finite when a float, and passes ``check``; raises Invalid saying why not."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise Invalid(wording.reason.format(reason="number out of range", value=show(value))) from None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise Invalid(wording.wrong_type.format(kind=wording.kind(kind), value=show(value)))
    if kind is float and not math.isfinite(value):
        raise Invalid(wording.reason.format(reason="must be a finite number", value=show(value)))
    if check and (reason := check(value)):
        raise Invalid(wording.reason.format(reason=reason, value=show(value)))
    return value


# -- problems -------------------------------------------------------------------------------------

class Problems:
    """The problems found in one file, each ``source: key: reason``. A reader that checks on after a
    problem ``add``s it and calls ``raise_if_any`` at the end, so the operator sees every problem
    at once; a reader that cannot go on (a later key depends on this one) calls ``fail``.

    ``error`` is the exception raised; ``shown`` caps the lines of its message (None: all)."""

    def __init__(self, source: str, error: type[Exception] = ConfigError, *, shown: int | None = 50) -> None:
        self.source, self.error, self.shown = source, error, shown
        self.messages: list[str] = []

    def add(self, key: str, reason: str) -> None:
        self.messages.append(f"{self.source}: {key}: {reason}")

    def fail(self, key: str, reason: str) -> NoReturn:
        """Report this problem (with any found before it) and stop."""
        self.add(key, reason)
        self.raise_if_any()
        raise AssertionError  # unreachable: there is a message

    def raise_if_any(self) -> None:
        if not self.messages:
            return
        if self.shown is None or len(self.messages) <= self.shown:
            raise self.error("\n".join(self.messages))
        raise self.error("\n".join(self.messages[:self.shown]) + f"\n... and {len(self.messages) - self.shown} more")


# -- whole mappings -------------------------------------------------------------------------------

def validate(data: Any, schema: dict[str, Any], source: str, path: str = "",
             problems: Problems | None = None) -> dict[str, Any]:
    """``data`` checked against ``schema``, defaults filled in; a bad value is reported and replaced
    by its default so the rest is checked too. Without ``problems`` (the caller's, to which these are
    added), raises ConfigError with every problem found."""
    own = problems is None
    problems = problems or Problems(source)
    out = validate_into(data, schema, path, problems)
    if own:
        problems.raise_if_any()
    return out


def validate_into(data: Any, schema: dict[str, Any], path: str, problems: Problems) -> dict[str, Any]:
    """``validate`` of the mapping at ``path`` (dotted, ending in "." unless empty), adding to ``problems``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(path.rstrip(".") or "(top level)", "expected a mapping")
        data = {}
    out: dict[str, Any] = {}
    for key in data:
        if key not in schema:
            problems.add(f"{path}{key_name(key)}", f"unknown key; allowed here: {', '.join(schema)}")
    for key, spec in schema.items():
        dotted = f"{path}{key}"
        if isinstance(spec, dict):
            out[key] = validate_into(data.get(key), spec, f"{dotted}.", problems)
        else:
            out[key] = _value(data, key, spec, dotted, problems)
    return out


def _value(data: dict[Any, Any], key: str, spec: Spec, dotted: str, problems: Problems) -> Any:
    """One checked value (a missing or null one is its default), or, after reporting why the given
    one is wrong, its default (None for a required key)."""
    kind, default, check = spec
    if key not in data or data[key] is None:
        if default is ...:
            problems.add(dotted, "required key is missing")
            return None
        return copy.deepcopy(default)
    try:
        return checked(data[key], kind, check)
    except Invalid as bad:
        problems.add(dotted, bad.reason)
        return copy.deepcopy(default) if default is not ... else None


# -- typed sections -------------------------------------------------------------------------------

class Section:
    """A validated section: a frozen dataclass whose fields are the documented keys
    (``cfg.sampling.interval_seconds``). It also reads as a mapping (``section["key"]``,
    ``.get``, ``**section``), which plug-in factories use to read their own keys by name."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type] - a dataclass subclass


_SECTION_CLASSES: dict[tuple[str, tuple[str, ...]], type] = {}


def section_class(name: str, schema: dict[str, Any]) -> type:
    """The Section dataclass named ``name`` with one field per key of ``schema`` (made once)."""
    key = (name, tuple(schema))
    if key not in _SECTION_CLASSES:
        _SECTION_CLASSES[key] = dataclasses.make_dataclass(
            name, [(k, Any) for k in schema], bases=(Section,), frozen=True)
    return _SECTION_CLASSES[key]


def typed(data: dict[str, Any], schema: dict[str, Any], name: str) -> Section:
    """Validated ``data`` as nested Sections: ``name`` for the top, ``name`` + the key in CamelCase
    for each nested schema (``Config`` -> ``ConfigSampling``)."""
    values = {k: typed(data[k], spec, f"{name}{k.title().replace('_', '')}") if isinstance(spec, dict) else data[k]
              for k, spec in schema.items()}
    return section_class(name, schema)(**values)

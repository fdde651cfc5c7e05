"""Validation of saved state: every value is checked, by the schema engine, before it becomes a counter.

A damaged entry (wrong type, NaN, negative, absurdly large) is set aside whole and
reported, never exposed and never fatal: a state file must not crash-loop the exporter.
"""
from __future__ import annotations

from typing import Any

from .schema import Check, Invalid, Wording, between, checked, show

# 1e15 J is 278 GWh, far beyond any device's lifetime; anything above is damage.
MAX_COUNTER = 1e15
MAX_RAW_MJ = 2.0**64


class BadEntry(ValueError):
    """One saved entry is damaged; the message says which field and why."""


def number(entry: dict[str, Any], key: str, *, default: float | None = None, hi: float = MAX_COUNTER,
           optional: bool = False) -> float | None:
    """``entry[key]`` as a finite float in [0, hi]; raises BadEntry."""
    mapping(entry, key)
    if key not in entry or entry[key] is None:
        if optional:
            return None
        if default is not None:
            return default
        raise BadEntry(f"{key}: missing")
    value = entry[key]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > hi:
        raise BadEntry(f"{key}: out of range ({show(value)})")  # shown as saved, not as a float
    return _checked(key, value, float, between(0, hi), _NUMBER)


def text(entry: dict[str, Any], key: str, default: str = "") -> str:
    return _checked(key, mapping(entry, key).get(key, default), str, None, _TEXT)


def mapping(value: Any, what: str) -> dict[str, Any]:
    return _checked(what, value, dict, None, _MAPPING)


# The saved state's words for a damaged value: "energy_j: not a number ('x')", "out of range (-1.0)".
_NUMBER = Wording(wrong_type="not a number ({value})", reason="out of range ({value})")
_TEXT = Wording(wrong_type="not a string ({value})")
_MAPPING = Wording(wrong_type="not a mapping ({value})")


def _checked(what: str, value: Any, kind: type, check: Check | None, wording: Wording) -> Any:
    try:
        return checked(value, kind, check, wording)
    except Invalid as bad:
        raise BadEntry(f"{what}: {bad.reason}") from None

"""Validation of saved state: every value is checked before it becomes a counter.

A damaged entry (wrong type, NaN, negative, absurdly large) is set aside whole and
reported, never exposed and never fatal: a state file must not crash-loop the exporter.
"""
from __future__ import annotations

import math
from typing import Any

from .schema import show

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
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadEntry(f"{key}: not a number ({show(value)})")
    if isinstance(value, int) and abs(value) > hi:
        raise BadEntry(f"{key}: out of range ({show(value)})")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= hi:
        raise BadEntry(f"{key}: out of range ({show(value)})")
    return value


def text(entry: dict[str, Any], key: str, default: str = "") -> str:
    value = mapping(entry, key).get(key, default)
    if not isinstance(value, str):
        raise BadEntry(f"{key}: not a string ({show(value)})")
    return value


def mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadEntry(f"{what}: not a mapping ({show(value)})")
    return value

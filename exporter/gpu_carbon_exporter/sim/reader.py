"""How scenario files are read: typed access to a YAML mapping, checked by the schema engine
(``schema.py``), with messages that name the file and the dotted key."""
from __future__ import annotations

from typing import Any, NoReturn

from ..schema import Check, Invalid, Problems, Wording, checked


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the file, key and reason."""


# The scenario reader's words for a wrong value ("expected float, got 'x'", "must be >= 0, got -1").
_WORDING = Wording(kind=lambda kind: str(getattr(kind, "__name__", kind)), reason="{reason}, got {value}")


def _at_least(minimum: float | None) -> Check | None:
    if minimum is None:
        return None
    return lambda value: f"must be >= {minimum}" if value < minimum else None


class Reader:
    """Typed access to a YAML mapping, checked by the schema engine; the first problem stops the
    reading (a later key often depends on this one) with a message naming file and key."""

    def __init__(self, source: str, data: Any, path: str = "") -> None:
        self.source, self.data, self.path = source, data, path
        if not isinstance(data, dict):
            self.fail(f"expected a mapping, got {type(data).__name__}")

    def fail(self, reason: str, key: str | None = None) -> NoReturn:
        where = ".".join(p for p in (self.path, key) if p) or "(top level)"
        Problems(self.source, ScenarioError).fail(where, reason)

    def get(self, key: str, kind: type | tuple, default: Any = ..., minimum: float | None = None) -> Any:
        if key not in self.data:
            if default is ...:
                self.fail("required key is missing", key)
            return default
        try:
            return checked(self.data[key], kind, _at_least(minimum), _WORDING)
        except Invalid as bad:
            self.fail(bad.reason, key)

    def child(self, key: str, value: Any) -> "Reader":
        return Reader(self.source, value, f"{self.path}.{key}" if self.path else key)

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.data) - allowed)
        if unknown:
            self.fail(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")

"""The error every reader of an operator's file raises: ``ConfigError``.

It sits at the bottom of the package so that the plug-ins (sources, carbon, attribution), the
YAML reader and the schema engine can raise it without importing ``config``, which imports them.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """Invalid configuration; the message names the file, key and reason."""

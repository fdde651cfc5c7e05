"""Secrets (API tokens, passwords) from an environment variable or a file, never from the command
line or a label, where ``ps`` and every scrape would show them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigError


def read_secret(spec: Any, env_key: str, file_key: str, where: str) -> str:
    """The secret named by ``spec[env_key]`` (an environment variable) or else ``spec[file_key]``
    (a file), stripped; ``where`` is the section's dotted key for the ConfigError."""
    if spec.get(env_key):
        value = os.environ.get(spec[env_key])
        if not value:
            raise ConfigError(f"{where}.{env_key}: environment variable {spec[env_key]} is not set")
        return value.strip()
    try:
        return Path(spec[file_key]).read_text().strip()
    except OSError as err:
        raise ConfigError(f"{where}.{file_key}: cannot read: {err.strerror}") from err

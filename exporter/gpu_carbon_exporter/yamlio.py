"""The project's one YAML reader, for every file an operator writes (config, web config, budgets,
scenarios): bounded in size, UTF-8 only, safe, and refusing a key given twice in one mapping,
which YAML would otherwise resolve silently by keeping the last one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .schema import key_name

MAX_BYTES = 1024 * 1024  # far above any configuration file; anything larger is a mistake


def read_yaml(path: Path) -> Any:
    """A YAML file's data; every malformed input (unreadable, huge, not UTF-8, bad YAML, too deep,
    a key given twice in one mapping) is one ConfigError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than 1 MiB; not a configuration file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from err
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    """YAML text's data, refusing a key given twice in one mapping (YAML would keep the last one
    silently); errors are ConfigErrors naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as dup:
        raise ConfigError(f"{source}: {key_name(dup.key)}: duplicate key at line {dup.line} (first at line "
                          f"{dup.first_line}); remove one of them") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {str(err)[:500]}") from err
    except RecursionError as err:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from err
    except ValueError as err:  # e.g. an integer longer than Python converts (4 300 digits)
        raise ConfigError(f"{source}: invalid YAML: {str(err)[:200]}") from err


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first_line: int, line: int) -> None:
        super().__init__(key)
        self.key, self.first_line, self.line = key, first_line, line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader refusing duplicate keys. Checked where PyYAML flattens a mapping, before merge
    keys (``<<: *base``) are expanded: a key that overrides a merged one is no duplicate."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        if id(node) not in self._checked:  # flattening rewrites node.value: check the original once
            self._checked.add(id(node))
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in first:
                        raise _DuplicateKey(key, first[key], line)
                except TypeError:  # an unhashable key: construct_mapping reports it
                    continue
                first[key] = line
        super().flatten_mapping(node)

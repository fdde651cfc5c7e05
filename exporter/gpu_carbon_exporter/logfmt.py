"""logfmt log lines (``ts=… level=… logger=… msg="…"``) that a parser can always split.

Values are quoted and escaped (backslash, double quote, newline, tab), so a message
carrying a quote or a newline — an exception text, a path — never breaks a line apart.
A traceback goes into its own escaped ``err`` field on the same line.
"""
from __future__ import annotations

import logging
import time


def quote(value: str) -> str:
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = (f"ts={ts} level={record.levelname.lower()} logger={record.name} "
                f"msg={quote(record.getMessage())}")
        if record.exc_info:
            line += f" err={quote(self.formatException(record.exc_info))}"
        return line

"""Reading Prometheus's HTTP API for the report: instant and range queries, and raw samples,
with promtool's connection options (basic auth, bearer token, CA, client certificate). Every
failure is one ReportError whose message says what went wrong and where."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests


class ReportError(Exception):
    """Nothing could be reported; ``code`` is the exit status (1: no such job or no data,
    3: the data source failed)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Series:
    """One series: its labels and its samples as (unix seconds, value), oldest first."""

    labels: dict[str, str]
    samples: list[tuple[float, float]]


@dataclass
class Prometheus:
    """A Prometheus (or anything serving its HTTP API) at ``url``."""

    url: str
    timeout: float = 30.0
    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def _session(self) -> requests.Session:
        s = requests.Session()
        if self.username is not None:
            s.auth = (self.username, self.password or "")
        if self.bearer_token:
            s.headers["Authorization"] = f"Bearer {self.bearer_token}"
        s.verify = False if self.insecure else (self.ca_file or True)
        if self.cert_file:
            s.cert = (self.cert_file, self.key_file) if self.key_file else self.cert_file
        return s

    def _get(self, path: str, params: dict[str, str]) -> Any:
        where = f"Prometheus at {self.url}"
        try:
            r = self._session().get(f"{self.url.rstrip('/')}{path}", params=params, timeout=self.timeout)
        except requests.Timeout:
            raise ReportError(f"{where} did not answer within {self.timeout:g} s (--timeout)", 3) from None
        except requests.RequestException as err:
            raise ReportError(f"{where} is not reachable: {err.__class__.__name__}: {str(err)[:200]}", 3) from None
        try:
            body = r.json()
        except ValueError:
            raise ReportError(f"{where} answered HTTP {r.status_code} with something that is not the Prometheus "
                              f"HTTP API: {r.text[:120]!r}", 3) from None
        if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise ReportError(f"{where} refused the query (HTTP {r.status_code}): {str(error or body)[:200]}", 3)
        return body["data"]

    def instant(self, expr: str, at: float | None = None) -> list[Series]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return _series(self._get("/api/v1/query", params), expr)

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{max(step, 0.001):.3f}"}
        return _series(self._get("/api/v1/query_range", params), expr)

    def raw(self, selector: str, start: float, end: float) -> list[Series]:
        """Every stored sample of ``selector`` in (start, end]: a range-vector selector at ``end``."""
        return self.instant(f"{selector}[{max(int(math.ceil(end - start)), 1)}s]", end)


def _series(data: dict, expr: str) -> list[Series]:
    kind, result = data.get("resultType"), data.get("result")
    if not isinstance(result, list):
        raise ReportError(f"unexpected answer to {expr!r}: no result list", 3)
    out = []
    try:
        for r in result:
            labels = dict(r.get("metric", {}))
            if kind == "matrix":
                samples = [(float(t), float(v)) for t, v in r["values"]]
            elif kind == "vector":
                samples = [(float(r["value"][0]), float(r["value"][1]))]
            else:
                raise ReportError(f"unexpected result type {kind!r} for {expr!r}", 3)
            out.append(Series(labels, samples))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ReportError(f"malformed samples in the answer to {expr!r}: {err!r:.120}", 3) from None
    return out


def read_secret(path: str | None) -> str | None:
    """A password or token from a file (never from the command line), its trailing newline removed."""
    if path is None:
        return None
    try:
        return Path(path).read_text().rstrip("\n")
    except OSError as err:
        raise ReportError(f"{path}: cannot read: {err.strerror or err}", 2) from None

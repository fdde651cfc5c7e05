"""A small JSON-over-HTTP client for intensity providers, with one error type.

Every failure becomes a ``ProviderError`` with a short ``reason`` (the value of
the errors counter's label): a provider never raises anything else.
"""
from __future__ import annotations

import email.utils
import json
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

from .timeline import intensity_problem, parse_time

REASONS = ("timeout", "connection", "http_4xx", "http_5xx", "auth", "rate_limited", "redirect",
           "malformed", "missing_field", "units", "out_of_range", "stale", "internal")


class ProviderError(Exception):
    """A failed fetch. ``reason`` is one of REASONS; ``retry_after`` in seconds (429)."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason, self.retry_after = reason, retry_after


# A server's Retry-After is honoured up to this (s): a bogus "retry in a week" must not silence a provider.
MAX_RETRY_AFTER_S = 3600.0


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date), capped at
    MAX_RETRY_AFTER_S; None when absent or malformed, so the caller backs off as usual."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class JsonHttp:
    """GET JSON with a timeout; follows redirects only within the same host."""

    def __init__(self, timeout_seconds: float, max_redirects: int = 3) -> None:
        import requests  # noqa: PLC0415 - only with a live provider configured (it is heavy)

        self._requests = requests
        self.session = requests.Session()
        self.timeout_seconds, self.max_redirects = timeout_seconds, max_redirects

    def get(self, url: str, *, params: dict | None = None, headers: dict | None = None,
            auth: tuple[str, str] | None = None) -> Any:
        origin = urlsplit(url).netloc
        for _ in range(self.max_redirects + 1):
            try:
                # verify passed per request: requests lets REQUESTS_CA_BUNDLE override a session's CA file
                r = self.session.get(url, params=params, headers=headers, auth=auth, verify=self.session.verify,
                                     timeout=self.timeout_seconds, allow_redirects=False)
            except self._requests.Timeout as err:
                raise ProviderError("timeout", f"no answer within {self.timeout_seconds:g}s") from err
            except self._requests.RequestException as err:
                raise ProviderError("connection", f"request failed: {type(err).__name__}: {err}"[:300]) from err
            if r.is_redirect or r.status_code in (301, 302, 303, 307, 308):
                target = urljoin(url, r.headers.get("Location", ""))
                if urlsplit(target).netloc != origin:
                    raise ProviderError("redirect", f"refusing redirect to another host ({urlsplit(target).netloc})")
                if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                    raise ProviderError("redirect", "refusing a redirect from https to plain http: it would send "
                                        "the credentials in clear")
                url, params = target, None
                continue
            return self._decode(r)
        raise ProviderError("redirect", "too many redirects")

    @staticmethod
    def _decode(r: Any) -> Any:  # a requests.Response
        if r.status_code == 429:
            raise ProviderError("rate_limited", "HTTP 429", retry_after(r.headers.get("Retry-After")))
        if r.status_code in (401, 403):
            raise ProviderError("auth", f"HTTP {r.status_code}: credentials rejected or expired")
        if r.status_code >= 500:
            raise ProviderError("http_5xx", f"HTTP {r.status_code}")
        if r.status_code >= 400:
            raise ProviderError("http_4xx", f"HTTP {r.status_code}")
        try:
            return json.loads(r.content)
        except ValueError as err:
            raise ProviderError("malformed", f"response is not JSON: {err}") from err


def field(data: Any, *path: str | int) -> Any:
    """data[path...] or ProviderError("missing_field")."""
    cur = data
    for key in path:
        try:
            cur = cur[key]
        except (KeyError, IndexError, TypeError):
            raise ProviderError("missing_field", f"missing field {'.'.join(map(str, path))}") from None
    if cur is None:
        raise ProviderError("missing_field", f"field {'.'.join(map(str, path))} is null")
    return cur


def number(value: Any, what: str) -> float:
    """A plausible intensity in gCO2e/kWh, or ProviderError."""
    problem = intensity_problem(value)
    if problem is not None:
        reason = "malformed" if problem.startswith("not a number") else "out_of_range"
        raise ProviderError(reason, f"{what}: {problem}")
    return float(value)


def timestamp(value: Any, what: str) -> float:
    """An ISO 8601 time (the providers' format) -> unix seconds, or ProviderError."""
    if not isinstance(value, str):
        raise ProviderError("malformed", f"{what} is not a timestamp: {value!r:.60}")
    try:
        return parse_time(value)
    except ValueError as err:
        raise ProviderError("malformed", f"{what}: {err}") from None

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


# A provider's answer is a few kB; more than this is no intensity data, whatever it is.
MAX_BODY_BYTES = 8 * 1024 * 1024
# The providers' JSON nests 5 levels; a deeper document is refused before anyone walks it.
MAX_JSON_DEPTH = 32


class JsonHttp:
    """GET JSON within a total deadline per request; follows redirects only within the same host."""

    def __init__(self, timeout_seconds: float, max_redirects: int = 3) -> None:
        import requests

        from .deadline import deadline_session

        self._requests = requests
        self.session = deadline_session()
        self.timeout_seconds, self.max_redirects = timeout_seconds, max_redirects

    def get(self, url: str, *, params: dict | None = None, headers: dict | None = None,
            auth: tuple[str, str] | None = None) -> Any:
        origin = urlsplit(url).netloc
        for _ in range(self.max_redirects + 1):
            status, location, retry, body = self._fetch(url, params, headers, auth)
            if status in (301, 302, 303, 307, 308):
                target = urljoin(url, location)
                if urlsplit(target).netloc != origin:
                    raise ProviderError("redirect", f"refusing redirect to another host ({urlsplit(target).netloc})")
                if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                    raise ProviderError("redirect", "refusing a redirect from https to plain http: it would send "
                                        "the credentials in clear")
                url, params = target, None
                continue
            return self._decode(status, retry, body)
        raise ProviderError("redirect", "too many redirects")

    def _fetch(self, url: str, params: dict | None, headers: dict | None,
               auth: tuple[str, str] | None) -> tuple[int, str, str | None, bytes]:
        """One request, whole (connect, headers, body), within timeout_seconds: status, Location,
        Retry-After and the body."""
        from .deadline import Deadline

        with Deadline(self.timeout_seconds) as deadline:
            try:
                # verify passed per request: requests lets REQUESTS_CA_BUNDLE override a session's CA file
                with self.session.get(url, params=params, headers=headers, auth=auth, verify=self.session.verify,
                                      timeout=self.timeout_seconds, allow_redirects=False, stream=True) as r:
                    body = bytearray()
                    for chunk in r.iter_content(64 * 1024):
                        body += chunk
                        if len(body) > MAX_BODY_BYTES:
                            raise ProviderError("malformed", f"response larger than {MAX_BODY_BYTES} bytes")
                    answer = r.status_code, r.headers.get("Location", ""), r.headers.get("Retry-After"), bytes(body)
            except self._requests.Timeout as err:
                raise ProviderError("timeout", f"no answer within {self.timeout_seconds:g}s") from err
            except self._requests.RequestException as err:
                if deadline.fired:
                    raise self._late() from err
                raise ProviderError("connection", f"request failed: {type(err).__name__}: {err}"[:300]) from err
            finally:
                self.session.close()  # no connection outlives its request's deadline
            if deadline.fired:  # cut in the body of a response without a length: the body is truncated
                raise self._late()
        return answer

    def _late(self) -> ProviderError:
        return ProviderError("timeout", f"no complete answer within {self.timeout_seconds:g}s "
                             "(connect, headers and body together)")

    @staticmethod
    def _decode(status: int, retry: str | None, body: bytes) -> Any:
        if status == 429:
            raise ProviderError("rate_limited", "HTTP 429", retry_after(retry))
        if status in (401, 403):
            raise ProviderError("auth", f"HTTP {status}: credentials rejected or expired")
        if status >= 500:
            raise ProviderError("http_5xx", f"HTTP {status}")
        if status >= 400:
            raise ProviderError("http_4xx", f"HTTP {status}")
        return parse_json(body)


def parse_json(body: bytes | str) -> Any:
    """A JSON document nested at most MAX_JSON_DEPTH deep, or ProviderError("malformed")."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ProviderError("malformed", f"response nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as err:
        raise ProviderError("malformed", f"response is not JSON: {err}") from err
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ProviderError("malformed", f"response nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def json_depth(data: Any) -> int:
    """How deep lists and objects nest in parsed JSON (a scalar: 0); walked without recursion,
    stopping one level past MAX_JSON_DEPTH."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        item, depth = todo.pop()
        if not isinstance(item, (list, dict)):
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


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

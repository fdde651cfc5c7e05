"""A real HTTP server on 127.0.0.1 whose routes each test sets: documented response shapes and faults."""
from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

Reply = tuple[int, dict[str, str], Any]  # status, headers, body (bytes, str or JSON-able)


class FakeApi:
    def __init__(self) -> None:
        self.routes: dict[str, Callable[[dict], Reply] | Reply] = {}
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.api = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def hits(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        api: FakeApi = self.server.api
        parts = urlsplit(self.path)
        req = {"time": time.monotonic(), "path": parts.path, "query": parse_qs(parts.query),
               "headers": dict(self.headers)}
        api.requests.append(req)
        route = api.routes.get(parts.path)
        if isinstance(route, Trickle):
            route.serve(self)
            return
        if route is None:
            status, headers, body = 404, {}, {"error": "not found"}
        else:
            status, headers, body = route(req) if callable(route) else route
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


def slow(seconds: float, reply: Reply) -> Callable[[dict], Reply]:
    def route(_req: dict) -> Reply:
        time.sleep(seconds)
        return reply
    return route


def sequence(*replies: Reply) -> Callable[[dict], Reply]:
    """Successive replies; the last one repeats."""
    left = list(replies)

    def route(_req: dict) -> Reply:
        return left.pop(0) if len(left) > 1 else left[0]
    return route


class Trickle:
    """A route that answers one byte per ``interval_s``: of the headers (``phase="headers"``) or,
    after complete headers, of a JSON body that never ends (``phase="body"``). Its loop is bounded
    (``limit_s``) and ends when the client goes away; ``started``/``ended`` say when (monotonic)."""

    def __init__(self, phase: str, interval_s: float = 1.0, limit_s: float = 20.0) -> None:
        assert phase in ("headers", "body")
        self.phase, self.interval_s, self.limit_s = phase, interval_s, limit_s
        self.started: float | None = None
        self.ended: float | None = None
        self.sent = 0

    @property
    def active(self) -> bool:
        return self.started is not None and self.ended is None

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        self.started = time.monotonic()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if self.phase == "body":  # no length: the body lasts until the connection ends
            handler.wfile.write(head + b"Connection: close\r\n\r\n")
            handler.wfile.flush()
            endless = itertools.chain(b'{"forecast": [', itertools.repeat(ord(" ")))
        else:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            handler.wfile.flush()
            endless = itertools.chain(b"X-Slow: ", itertools.repeat(ord("a")))
        handler.close_connection = True
        try:
            for byte in endless:
                if time.monotonic() - self.started > self.limit_s:
                    break
                handler.wfile.write(bytes((byte,)))
                handler.wfile.flush()
                self.sent += 1
                time.sleep(self.interval_s)  # the pace of the attack, not a wait for a condition
        except OSError:  # the client cut the connection
            pass
        finally:
            self.ended = time.monotonic()

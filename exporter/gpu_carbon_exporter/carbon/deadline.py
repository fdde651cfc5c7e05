"""A total deadline for one HTTP request: connect, TLS handshake, headers and body together.

requests' ``timeout`` bounds each socket operation, so a server sending one byte a second
(headers or body) holds a request for ever. Here every socket a request opens is watched:
at the deadline a timer thread shuts it down, which ends the blocked read at once in
whatever phase it is, and the caller reports a timeout.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()  # the Deadline of the request this thread is making, if any


class Deadline:
    """Shuts down every socket registered with it once ``seconds`` have passed; use as a
    context manager around one request (``fired`` then says whether it cut the request)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _current.deadline = self
        self._ends = time.monotonic() + self.seconds
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        _current.deadline = None
        self._timer.cancel()
        with self._lock:
            for sock in self._socks:
                sock.close()
            self._socks.clear()

    def time_left(self) -> float:
        return self._ends - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        # A duplicate descriptor: TLS detaches the original socket object, but a shutdown through
        # any descriptor of the connection ends it.
        dup = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            self._socks.append(dup)
            if self.fired:
                _shutdown(dup)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._socks:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the peer
        pass


def _watched(sock: socket.socket) -> socket.socket:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)
    return sock


def _time_left(conn: HTTPConnection) -> None:
    """Connecting happens before the socket can be watched: each connect attempt gets only the time
    left of the request's deadline."""
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        conn.timeout = max(0.001, deadline.time_left())


class _Conn(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        _time_left(self)
        return _watched(super()._new_conn())


class _TlsConn(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        _time_left(self)
        return _watched(super()._new_conn())


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Conn


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConn


_POOLS = {"http": _Pool, "https": _TlsPool}


class _Adapter(HTTPAdapter):
    """An adapter whose connections (direct or through an HTTP proxy) register their sockets; through
    a SOCKS proxy only requests' per-read timeout applies."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS has pools of its own: replacing them would bypass it
            manager.pool_classes_by_scheme = _POOLS
        return manager


def deadline_session() -> requests.Session:
    """A session whose requests a ``Deadline`` can cut. Close its connections after each
    request (``session.close()``): only sockets opened under a Deadline are watched."""
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, _Adapter())
    return session

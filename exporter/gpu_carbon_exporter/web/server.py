"""The threaded HTTP server: a thread per connection, a capped number of connection slots, every
phase of a connection under a deadline, and eviction when the slots are full, so slow, idle or
pipelining clients cannot starve scrapes. The TLS handshake runs in the connection's thread,
never in the accept loop."""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Callable

from ..exposition import Exposition
from .auth import BasicAuth
from .config import WebConfig
from .handler import Handler

log = logging.getLogger(__package__)

# Pending connections the kernel queues before accept (capped by net.core.somaxconn): sized for a
# burst of scrapers and health checks reconnecting at once, far above the connection cap.
LISTEN_BACKLOG = 1024


# A connection may spend at most read_timeout_seconds writing responses back to back (pipelined or
# not): its write budget refills at WRITE_DUTY of wall time, so a scraper, whose writes take
# milliseconds every scrape interval, never runs out, while a client pipelining requests and reading
# slowly is cut once the budget is spent, however much each single response progresses.
WRITE_DUTY = 0.1
# Requests on one connection: the last response says "Connection: close" (the client reconnects).
MAX_REQUESTS_PER_CONNECTION = 100
# A connection busy writing may be evicted for a new one once its current run of responses (those
# written back to back, without waiting for the client) has lasted this long: a response that has
# just begun, a keep-alive scraper's included, is not cut for the next comer.
EVICTABLE_AFTER_S = 0.5
# A wait for the next request head shorter than this is pipelining: the run of responses goes on.
PIPELINED_S = 0.05
# The watchdog sleeps until the soonest deadline, woken sooner when a connection opens or a response
# starts (its deadline, what is left of its write budget, may come first); this caps each sleep in
# case a wake-up is ever missed, and is how soon a connection cut but still open is cut again.
WATCHDOG_MAX_SLEEP_S = 1.0
RECUT_S = 0.1


class _Conn:
    """One connection's phase, deadline, write budget and progress, enforced by the server."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        now = time.monotonic()
        self.sock, self.timeout, self.phase = sock, timeout, "head"
        self.deadline, self.opened, self.idle_since = now + timeout, now, now
        self.sent = self.requests = 0
        self.budget, self.budget_at, self.write_started = timeout, now, now
        self.run_started, self.run_sent = now, 0  # the current run of back-to-back responses

    def start_head(self, now: float) -> None:
        """Waiting for the client's next request head (a fresh deadline: the client is the slow one)."""
        if self.phase == "write":
            self.budget -= now - self.write_started
            self.budget_at = now
        self.phase, self.deadline, self.idle_since = "head", now + self.timeout, now

    def start_write(self, now: float) -> None:
        """Answering a request: the deadline is what is left of the write budget, never renewed per response."""
        self.budget = min(self.timeout, self.budget + (now - self.budget_at) * WRITE_DUTY)
        if self.requests == 0 or now - self.idle_since > PIPELINED_S:  # the client waited for us: a new run
            self.run_started, self.run_sent = now, self.sent
        self.budget_at, self.write_started, self.phase = now, now, "write"
        self.requests += 1
        self.deadline = now + max(0.0, self.budget)

    def run_age(self, now: float) -> float:
        return now - self.run_started

    def progress(self, now: float) -> float:
        """Bytes written per second in the current run of responses (not since the connection opened:
        a keep-alive scraper idles between scrapes, and its average would look slow)."""
        return (self.sent - self.run_sent) / max(self.run_age(now), EVICTABLE_AFTER_S)

    def cut(self) -> None:
        try:
            # The plain socket's shutdown, also for a TLS socket (SSLSocket.shutdown would speak TLS):
            # the handler's blocked read, write or handshake returns at once.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _RateLimitedLog:
    """At most one warning per ``every_s`` for a repeated event, with the count in between."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s, self._last, self._count = every_s, -float("inf"), 0
        self._lock = threading.Lock()

    def event(self, message: str) -> None:
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if now - self._last < self.every_s:
                return
            count, self._count, self._last = self._count, 0, now
        log.warning("%s (%d time(s) since the last such message)", message, count)


class ExporterServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once, every phase under a deadline.

    A connection's request head (TLS handshake included, and a keep-alive connection's wait
    for its next request) must arrive within ``read_timeout_seconds``; all the responses it is
    written back to back share one budget of ``read_timeout_seconds`` (``WRITE_DUTY``), and it
    gets at most ``MAX_REQUESTS_PER_CONNECTION`` of them. When every slot is taken, the connection
    that has waited longest for its request head is closed to make room or, when all are busy
    writing, the one that has made the least progress for the time it has held its slot, so a
    flood of slow, idle or pipelining connections cannot lock scrapes or /healthz out."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], collector: Any, web: WebConfig,
                 health: Callable[[], tuple[bool, str]], *, read_timeout_seconds: float = 10.0,
                 max_connections: int = 64) -> None:
        self.exposition = Exposition(collector)
        self.web, self.health = web, health
        self.read_timeout_seconds, self.max_connections = read_timeout_seconds, max_connections
        self.auth = BasicAuth(web.users)
        self._conns: dict[int, _Conn] = {}  # id(conn) -> conn
        self._starting: dict[int, _Conn] = {}  # id(raw socket) -> conn, until its thread takes it
        self._lock = threading.Lock()
        self._local = threading.local()
        self._refused = _RateLimitedLog()
        self._evicted = _RateLimitedLog()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._stop_watchdog = threading.Event()
        self._wake = threading.Event()  # a deadline sooner than the watchdog's wake-up: it looks again
        self._sleep_until = float("inf")  # when the watchdog wakes next (monotonic; under _lock)
        super().__init__(address, Handler)
        threading.Thread(target=self._watchdog, name="http-deadlines", daemon=True).start()

    def reload_web(self, web: WebConfig) -> None:
        """Swap in a new web config; connections already open finish with the old one."""
        self.web, self.auth = web, BasicAuth(web.users)

    def server_close(self) -> None:
        with self._lock:
            self._stop_watchdog.set()
            self._wake.set()
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that stalled past its deadline or hung up is routine, not a traceback on stderr."""
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._conns) >= self.max_connections and not self._evict_one():
                self._refused.event(f"connection limit ({self.max_connections}) reached with every connection "
                                    f"busy, refusing {client_address[0]}")
                self.shutdown_request(request)
                return
            conn = _Conn(request, self.read_timeout_seconds)
            self._conns[id(conn)] = conn
            if conn.deadline < self._sleep_until:
                self._wake.set()
            self._starting[id(request)] = conn  # handed to the connection's thread
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread took it (a stop signal, no thread to be had): no slot held
            with self._lock:
                self._conns.pop(id(conn), None)
                self._starting.pop(id(request), None)
            raise

    def _evict_one(self) -> bool:
        """Make room for a new connection (called with the lock held): close the one waiting longest
        for its request head or, when all are busy, the one with the least progress per second held."""
        now = time.monotonic()
        waiting = [c for c in self._conns.values() if c.phase == "head"]
        if waiting:
            victim = min(waiting, key=lambda c: c.idle_since)
        else:
            held = [c for c in self._conns.values() if c.run_age(now) >= EVICTABLE_AFTER_S]
            if not held:
                return False
            victim = min(held, key=lambda c: (c.progress(now), c.run_started))
        del self._conns[id(victim)]
        victim.cut()
        self._evicted.event("connection limit reached: closed the connection idle the longest or "
                            "making the least progress")
        return True

    def start_head(self) -> None:
        """The current connection waits for its next request head."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.start_head(time.monotonic())

    def start_write(self) -> bool:
        """The current connection starts a response; False when it is the connection's last."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return True
        with self._lock:  # the watchdog sees the new deadline, or this sees when it wakes next
            conn.start_write(time.monotonic())
            if conn.deadline < self._sleep_until:  # rare: a write budget nearly spent
                self._wake.set()
        return conn.requests < MAX_REQUESTS_PER_CONNECTION

    def wrote(self, n: int) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.sent += n

    def _watchdog(self) -> None:
        """Cuts every connection past its deadline. Asleep while none is open (an idle exporter stays
        asleep), else until the soonest deadline (at most WATCHDOG_MAX_SLEEP_S): a keep-alive scraper's
        idle connection costs a wake-up a second, not ten, and a scrape none (a new connection or a
        response wakes it only when its deadline comes sooner than that)."""
        while True:
            with self._lock:  # server_close sets both events under this lock: no wake-up is lost
                if self._stop_watchdog.is_set():
                    return
                self._wake.clear()
                soonest = min((c.deadline for c in self._conns.values()), default=float("inf"))
                now = time.monotonic()
                self._sleep_until = min(soonest, now + WATCHDOG_MAX_SLEEP_S) if self._conns else float("inf")
                timeout = None if not self._conns else max(self._sleep_until - now, 0.0)
            self._wake.wait(timeout)
            now = time.monotonic()
            with self._lock:
                late = [c for c in self._conns.values() if now > c.deadline]
                for conn in late:  # gone once its thread ends; looked at again meanwhile, not spun on
                    conn.deadline = now + RECUT_S
            for conn in late:
                conn.cut()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._lock:
            conn = self._local.conn = self._starting.pop(id(request), None)
        try:
            request.settimeout(self.read_timeout_seconds)
            if self.web.ssl_context is not None:
                try:
                    request = self.web.ssl_context.wrap_socket(request, server_side=True,
                                                               do_handshake_on_connect=False)
                    if conn is not None:
                        conn.sock = request  # the watchdog cuts the TLS socket, handshake included
                    request.do_handshake()
                except (ssl.SSLError, OSError) as err:
                    log.debug("TLS handshake with %s failed: %s", client_address, err)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                if conn is not None:
                    self._conns.pop(id(conn), None)
            self._local.conn = None

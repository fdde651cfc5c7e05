"""The request handler: routes (/metrics, /healthz, the landing page), basic auth, content
negotiation (text or OpenMetrics, gzip) and the framing rules that keep a connection's slot
honest. Deadlines and slots are the server's (``server.py``); the handler tells it when a
connection waits for a request head, starts a response and writes."""
from __future__ import annotations

import gzip
import logging
import time
from functools import lru_cache
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import choose_encoder

from .. import __version__
from ..exposition import TEXT_CONTENT_TYPE

if TYPE_CHECKING:
    from .server import ExporterServer

log = logging.getLogger(__package__)

WRITE_CHUNK = 64 * 1024  # bytes written at a time, so progress is seen while a slow reader reads


LANDING = """<!doctype html><html><head><title>gpu-carbon-exporter</title></head><body>
<h1>gpu-carbon-exporter {version}</h1>
<p>GPU energy, power and carbon emissions for Prometheus.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li></ul>
</body></html>"""


# A scraper sends the same Accept and Accept-Encoding every time: their answers are kept, a few
# (bounded: a client inventing a new header each request only churns this small cache).
@lru_cache(maxsize=32)
def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header allows gzip (``gzip;q=0`` and ``*;q=0`` forbid it)."""
    gz = star = None
    for item in (header or "").split(","):
        coding, *params = [p.strip() for p in item.split(";")]
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding.lower() in ("gzip", "x-gzip"):
            gz = q
        elif coding == "*":
            star = q
    if gz is not None:
        return gz > 0
    return star is not None and star > 0


@lru_cache(maxsize=32)
def negotiate(accept: str | None) -> tuple[str, str]:
    """(format, content type) for an Accept header: ``text``, ``openmetrics`` (our fast encoder), or
    ``client`` where a name escaping our encoder does not do (``dots``, ``values``) was asked for."""
    try:
        _, ctype = choose_encoder(accept or "")
    except Exception:  # noqa: BLE001 - a malformed header (version=abc) gets the classic format
        return "text", TEXT_CONTENT_TYPE
    if "escaping=dots" in ctype or "escaping=values" in ctype:
        return "client", ctype
    return ("openmetrics" if ctype.startswith("application/openmetrics-text") else "text"), ctype


class Handler(BaseHTTPRequestHandler):
    """One connection's requests, answered one after another (HTTP/1.1 keep-alive)."""

    server: ExporterServer
    protocol_version = "HTTP/1.1"
    server_version = f"gpu-carbon-exporter/{__version__}"
    sys_version = ""  # no Python version in the Server header
    disable_nagle_algorithm = True  # a body over WRITE_CHUNK goes in several writes: no 40-ms delayed-ACK stall

    _date: tuple[int, str] = (0, "")  # the Date header's text, for the second it is of

    def date_time_string(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        second, text = Handler._date
        if second != now:  # formatted once a second, not once a request
            text = super().date_time_string(now)
            Handler._date = (now, text)
        return text

    def log_message(self, fmt: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):  # called for every request: format nothing when unread
            log.debug("%s %s", self.address_string(), fmt % args)

    # Every error answer has a status line and a plain body: the base class's default version is
    # HTTP/0.9, whose answers are a bare HTML page, and it echoes the request line into it.
    default_request_version = "HTTP/1.0"
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = "text/plain; charset=utf-8"

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        super().send_error(code, None if message is None else message.split(" (", 1)[0], "")

    def handle_one_request(self) -> None:
        self.server.start_head()
        super().handle_one_request()

    def parse_request(self) -> bool:
        if len(self.raw_requestline.split()) == 2:
            # HTTP/0.9 ("GET /"): refused before the base class, which would wait for headers it never gets
            self.command, self.request_version, self.close_connection = None, "HTTP/1.0", True
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            self.send_error(400, "Bad request syntax")
            return False
        if not super().parse_request():
            return False
        if not self._no_body():
            return False
        if not self.server.start_write():
            self.close_connection = True
        return True

    def _no_body(self) -> bool:
        """This endpoint takes no request body: one is refused (and the connection closed), never read
        slowly into a slot and never taken for the next request. Framing headers given twice are
        refused too (RFC 9112 6.3): a server and a proxy in front of it could read them differently."""
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get_all("Transfer-Encoding") or len(lengths) > 1 or \
                (lengths and lengths[0].strip() != "0"):
            self.send_error(400, "request bodies and repeated framing headers are not accepted here")
            self.close_connection = True
            return False
        return True

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**self.server.web.headers, **(extra or {})}.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        head, self._headers_buffer = b"".join(self._headers_buffer), []
        if self.command == "HEAD":
            self._write(head)
        elif len(body) <= WRITE_CHUNK:  # a scrape's usual size: head and body in one send, one syscall
            self._write(head + body)
        else:
            self._write(head)
            view = memoryview(body)
            for start in range(0, len(view), WRITE_CHUNK):
                self._write(view[start:start + WRITE_CHUNK])

    def _write(self, data: bytes | memoryview) -> None:
        self.wfile.write(data)
        self.server.wrote(len(data))

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        # /healthz says only ok or what is wrong, never a metric: it answers without credentials, so
        # the kubelet's and Docker's probes work with basic auth on (TLS still applies).
        if path != "/healthz" and not self.server.auth.check(self.headers.get("Authorization"),
                                                                 self.client_address[0]):
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Basic realm="gpu-carbon-exporter"'})
            return
        if path == "/metrics":
            fmt, ctype = negotiate(self.headers.get("Accept"))
            compress = accepts_gzip(self.headers.get("Accept-Encoding"))
            if fmt == "client":  # rare: prometheus_client's own encoder, which escapes names as asked
                body = choose_encoder(self.headers.get("Accept", ""))[0](self.server.exposition.collector)
                body = gzip.compress(body, compresslevel=1) if compress else body
            else:
                body = self.server.exposition.body(fmt == "openmetrics", compress)
            extra = {"Vary": "Accept, Accept-Encoding"}
            if compress:
                extra["Content-Encoding"] = "gzip"
            self._send(200, body, ctype, extra)
        elif path == "/healthz":
            ok, text = self.server.health()
            self._send(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, LANDING.format(version=__version__).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8")

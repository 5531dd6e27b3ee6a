"""The exporter's HTTP server: ``/metrics``, ``/healthz`` and a landing page at ``/``.

The stdlib ThreadingHTTPServer with HTTP/1.1 keep-alive: Prometheus keeps its connection open between
scrapes, so a scrape reuses the connection's thread instead of starting one. Connections are capped
and tracked, so that ``stop()`` can close idle keep-alive connections and release the port at once.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import html
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from krakenplug import errors
from krakenplug.exporter.exposition import CONTENT_TYPE

logger = logging.getLogger(__name__)

IDLE_TIMEOUT_SECONDS = 300.0  # longer than any sane scrape interval, so keep-alive connections survive
MAX_CONNECTIONS = 32
_GZIP_MIN_BYTES = 1024


@dataclasses.dataclass(frozen=True)
class Routes:
    """What the server serves; the exporter supplies these."""

    metrics: Callable[[], bytes]
    health: Callable[[], tuple[bool, str]]
    title: str = "KrakenPlug exporter"


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6, empty host = all interfaces) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise errors.ConfigError(f"exporter.address: expected HOST:PORT, got {address!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "krakenplug-exporter"
    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/metrics":
                self._send(200, self.server.routes.metrics(), CONTENT_TYPE, compressible=True)
            elif path == "/healthz":
                ok, reason = self.server.routes.health()
                self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
            elif path == "/":
                self._send(200, _landing_page(self.server.routes.title), "text/html; charset=utf-8")
            else:
                self._send(404, f"no such page: {path}; try /metrics\n".encode(), "text/plain; charset=utf-8")
        except Exception as err:  # the HTTP boundary: a bug costs one response, not the server
            logger.exception("serving %s failed", path)
            self._send(500, f"internal error: {err}\n".encode(), "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str, *, compressible: bool = False) -> None:
        gzipped = compressible and len(body) >= _GZIP_MIN_BYTES and _accepts_gzip(self.headers.get("Accept-Encoding"))
        if gzipped:
            body = gzip.compress(body, compresslevel=1)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins handler threads (after stop() closed their sockets)

    def __init__(self, address: tuple[str, int], routes: Routes) -> None:
        self.routes = routes
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        with self._connections_lock:
            if len(self._connections) >= MAX_CONNECTIONS:
                logger.warning("refusing connection from %s: %d connections open", client_address[0], MAX_CONNECTIONS)
                self.shutdown_request(request)
                return
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # type: ignore[no-untyped-def]
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by the peer
                pass


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """Listens on ``address`` when started; ``stop()`` closes every connection and frees the port."""

    def __init__(self, address: str, routes: Routes) -> None:
        self.address = address
        host, port = parse_address(address)
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), routes)
        except OSError as err:
            raise errors.ConfigError(f"exporter.address {address}: cannot listen: {_bind_reason(err)}") from err
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        # serve_forever checks for shutdown every poll_interval; 0.2 s keeps stop() quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="krakenplug-exporter-http", daemon=True)
        self._thread.start()
        logger.info("serving metrics on %s (/metrics, /healthz)", self.address)

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.close_connections()
        self._server.server_close()


def _bind_reason(err: OSError) -> str:
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host: {err.strerror}"
    known = {errno.EADDRINUSE: "address already in use", errno.EADDRNOTAVAIL: "cannot assign requested address",
             errno.EACCES: "permission denied (ports below 1024 need privileges)"}
    return known.get(err.errno, err.strerror or str(err))


def _accepts_gzip(header: str | None) -> bool:
    if not header:
        return False
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _landing_page(title: str) -> bytes:
    name = html.escape(title)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{name}</title></head>\n"
            f"<body><h1>{name}</h1>\n<ul>\n"
            "<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics of this node's accelerators</li>\n"
            "<li><a href=\"/healthz\">/healthz</a>: 200 while the last collection succeeded recently</li>\n"
            "</ul></body></html>\n").encode()

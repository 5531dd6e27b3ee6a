"""The exporter's HTTP server: prometheus_client's WSGI server, hardened for a port anyone may reach.

prometheus_client serves its WSGI app with ``ThreadingWSGIServer`` (wsgiref, a thread per connection).
That class is the base here; what it lacks for a DaemonSet port open to the cluster network is added,
and only that (docs/exporter.md, "HTTP"):

- **Time bounds on clients.** A connection must send its request within ``request_timeout`` of connecting
  (TLS handshake included) or of its first byte; a keep-alive connection may idle up to
  ``idle_timeout`` between requests; an answer must be taken within ``answer_timeout``. One watchdog
  thread drops a connection past its deadline and logs one line; everyone else is served meanwhile. It
  sleeps until the earliest deadline of an open connection, and with none open until one connects: an
  idle exporter wakes for nothing.
- **No wedge at the connection cap.** At ``max_connections`` the longest-idle keep-alive connection
  makes room; if none is idle the newcomer is closed at once (one line). Every other state is bounded
  by a deadline, so the cap frees itself. No lock is held while calling anything that takes a lock.
- **TLS per connection.** The handshake runs on the connection's thread under its deadline, never in
  the accept loop (where one silent client would block every other).
- **Keep-alive (HTTP/1.1).** Prometheus keeps its connection open, so a scrape starts no thread.
- **Prompt stop.** ``stop()`` returns within about a second whatever clients do: the accept loop waits
  on the listening socket and a wake-up socket (socketserver's loop instead polls every ``poll_interval``),
  every connection is shut down, and connection threads are daemons.
- **Quiet failures.** A client that disconnects, times out or fails the handshake costs one log line,
  never a traceback; the listen backlog (1024) keeps bursts of 200 concurrent scrapes from waiting on
  SYN retransmits.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import logging
import selectors
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, cast
from http.server import BaseHTTPRequestHandler
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler

from prometheus_client.exposition import ThreadingWSGIServer

from krakenplug import errors
from krakenplug.settings import listen_address

__all__ = ["Limits", "MetricsServer", "parse_address"]

logger = logging.getLogger(__name__)

WSGIApp = Callable[..., Any]
_JOIN_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class Limits:
    """How long and how many: every client state has a deadline."""

    request_timeout: float = 10.0  # connect (or first byte) -> complete request headers
    idle_timeout: float = 300.0  # between requests on a keep-alive connection (beyond any scrape interval)
    answer_timeout: float = 60.0  # request read -> answer sent (vendor reads are bounded well below)
    max_connections: int = 256
    backlog: int = 1024


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6, empty host = all interfaces) -> (host, port)."""
    try:
        return listen_address(address)
    except ValueError as err:
        raise errors.ConfigError(f"exporter.address: expected HOST:PORT, got {address!r}: {err}") from None


class _Connection:
    """One client: its socket (replaced by the TLS one after the handshake), state and deadline."""

    def __init__(self, sock: socket.socket, peer: str, deadline: float,
                 rescheduled: Callable[[float], None]) -> None:
        self.sock = sock
        self.peer = peer
        self.state = "request"
        self.since = time.monotonic()
        self.deadline = deadline
        self.dropped = ""  # why the watchdog (or the cap) dropped it; empty while alive
        self.thread: threading.Thread | None = None
        self._rescheduled = rescheduled

    def expect(self, state: str, seconds: float) -> None:
        self.since = time.monotonic()
        self.state, self.deadline = state, self.since + seconds
        self._rescheduled(self.deadline)

    def drop(self, reason: str) -> None:
        """Ends the connection from another thread; its own thread then fails its read or write and exits."""
        self.dropped = reason
        try:
            # socket.socket's own shutdown: on a TLS socket this cuts the fd without touching the
            # SSL object that the connection's thread may be using right now.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already gone


class _Server(ThreadingWSGIServer):
    daemon_threads = True
    block_on_close = False  # stop() joins connection threads itself, with a time limit

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, app: WSGIApp, limits: Limits,
                 tls: Callable[[], ssl.SSLContext | None]) -> None:
        self.address_family = family
        self.request_queue_size = limits.backlog
        self.limits = limits
        self.tls = tls
        self._connections: dict[socket.socket, _Connection] = {}
        self._lock = threading.Lock()
        self._deadlines = threading.Condition(self._lock)  # the watchdog sleeps on it
        self._next_wake: float | None = None  # when the watchdog wakes next; None: when notified
        self._stopped = threading.Event()
        self._serving = threading.Event()
        self._served = threading.Event()
        super().__init__(address, _Handler)
        self._wake_reader, self._wake_writer = socket.socketpair()  # after the bind, which may fail
        self.set_app(app)
        self._watchdog = threading.Thread(target=self._watch, name="krakenplug-exporter-watchdog", daemon=True)
        self._watchdog.start()

    # -- connection bookkeeping (the accept loop) ---------------------------------------------------
    def verify_request(self, request: Any, client_address: Any) -> bool:
        peer = _peer(client_address)
        victim: _Connection | None = None
        with self._lock:
            if len(self._connections) >= self.limits.max_connections:
                idle = [c for c in self._connections.values() if c.state == "idle" and not c.dropped]
                if not idle:
                    refused = True
                else:
                    victim, refused = min(idle, key=lambda c: c.since), False
            else:
                refused = False
            if not refused:
                deadline = time.monotonic() + self.limits.request_timeout
                self._connections[request] = _Connection(request, peer, deadline, self._rescheduled)
                self._wake_watchdog_for(deadline)
        if victim is not None:
            logger.warning("exporter: dropped idle client %s to make room (%d connections open)",
                           victim.peer, self.limits.max_connections)
            victim.drop("evicted")
        if refused:
            logger.warning("exporter: refused client %s: %d connections open, none idle",
                           peer, self.limits.max_connections)
        return not refused

    def connection(self, request: Any) -> _Connection:
        with self._lock:
            return self._connections[request]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self.connection(request).thread = threading.current_thread()
        super().process_request_thread(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            tracked = self._connections.pop(request, None)
        if tracked is not None and tracked.sock is not request:
            try:  # the TLS socket that took over the file descriptor
                tracked.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            tracked.sock.close()
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line per failed client; a traceback only for what is not a network failure (a bug)."""
        err = sys.exc_info()[1]
        with self._lock:
            tracked = self._connections.get(request)
        peer = _peer(client_address)
        if tracked is not None and tracked.dropped:
            logger.debug("exporter: client %s ended after being dropped: %s", peer, err)
        elif isinstance(err, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)):
            # The client left by itself (a TCP port check, a closed browser tab): nothing to report.
            logger.debug("exporter: client %s went away: %s", peer, err)
        elif isinstance(err, OSError):
            logger.warning("exporter: dropped client %s: %s", peer, _describe(err))
        else:
            logger.error("exporter: serving client %s failed", peer, exc_info=err)

    # -- the accept loop --------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """socketserver's loop without its ``poll_interval`` wake-ups: :meth:`shutdown` wakes it instead."""
        self._serving.set()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._stopped.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self and not self._stopped.is_set():
                            # socketserver's own accept-verify-process step (not in typeshed)
                            self._handle_request_noblock()  # type: ignore[attr-defined]
                    self.service_actions()
        finally:
            self._served.set()

    def shutdown(self) -> None:
        """Ends :meth:`serve_forever` (from another thread) and waits for it, as socketserver's does."""
        self._stopped.set()
        self._wake_reader_now()
        if self._serving.is_set():
            self._served.wait()

    def _wake_reader_now(self) -> None:
        try:
            self._wake_writer.send(b"\0")
        except OSError:
            pass  # already closed: nothing left to wake

    # -- deadlines ---------------------------------------------------------------------------------
    def _rescheduled(self, deadline: float) -> None:
        with self._lock:
            self._wake_watchdog_for(deadline)

    def _wake_watchdog_for(self, deadline: float) -> None:
        """With the lock held: a new deadline; wake the watchdog only if it would sleep past it."""
        if self._next_wake is None or deadline < self._next_wake:
            self._deadlines.notify()

    def _watch(self) -> None:
        while True:
            with self._lock:
                late = self._sleep_until_late()
            if late is None:
                return
            for connection in late:
                logger.warning("exporter: dropped client %s: %s", connection.peer, _late(connection, self.limits))
                connection.drop("timeout")

    def _sleep_until_late(self) -> list[_Connection] | None:
        """With the lock held: blocks until some connection is past its deadline; None once stopped."""
        while not self._stopped.is_set():
            now = time.monotonic()
            pending = [c for c in self._connections.values() if not c.dropped]
            late = [c for c in pending if c.deadline <= now]
            if late:
                self._next_wake = now
                return late
            self._next_wake = min((c.deadline for c in pending), default=None)
            self._deadlines.wait(None if self._next_wake is None else self._next_wake - now)
        return None

    def close_everything(self) -> None:
        """After the accept loop ended: drop every connection, free the port, give threads a moment."""
        self._stopped.set()
        with self._lock:
            self._deadlines.notify_all()
        self._watchdog.join(timeout=_JOIN_SECONDS)
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            connection.drop("stopping")
        self.server_close()
        self._wake_reader.close()
        self._wake_writer.close()
        deadline = time.monotonic() + _JOIN_SECONDS
        for connection in connections:
            if connection.thread is not None:
                connection.thread.join(timeout=max(0.0, deadline - time.monotonic()))


class _ServerHandler(ServerHandler):
    http_version = "1.1"  # with Content-Length on every answer, so clients keep the connection
    request_handler: _Handler

    def log_exception(self, exc_info: Any) -> None:
        logger.debug("exporter: answering %s failed: %s", self.request_handler.client_address[0], exc_info[1])


class _Handler(WSGIRequestHandler):
    """HTTP/1.1 keep-alive over wsgiref: one request per ``handle_one_request``, under deadlines."""

    protocol_version = "HTTP/1.1"
    server_version = "krakenplug-exporter"
    server: _Server
    rbufsize = 64 * 1024

    def setup(self) -> None:
        self._connection = self.server.connection(self.request)
        self._served = 0
        # wsgiref writes the head and the body separately; with Nagle's algorithm a small (gzipped) body
        # then waits for the client's delayed ACK, 40 ms on Linux.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.server.tls()
        if context is not None:
            # The handshake blocks on the client; the watchdog's request deadline bounds it.
            self.request = context.wrap_socket(self.request, server_side=True)
            self._connection.sock = self.request
        super().setup()

    def handle(self) -> None:
        # wsgiref answers one request per connection; BaseHTTPRequestHandler's loop keeps it alive.
        BaseHTTPRequestHandler.handle(self)

    def handle_one_request(self) -> None:
        limits = self.server.limits
        if self._served:
            self._connection.expect("idle", limits.idle_timeout)
            if not cast(io.BufferedReader, self.rfile).peek(1):  # the client closed its keep-alive connection
                self.close_connection = True
                return
            self._connection.expect("request", limits.request_timeout)
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            self.close_connection = True
            return
        if not self.parse_request():
            return
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # bodies are never read; the next bytes would not be a request
        self._connection.expect("answer", limits.answer_timeout)
        app = self.server.get_app()
        assert app is not None, "set_app() runs before the server accepts"
        handler = _ServerHandler(cast(IO[bytes], self.rfile), cast(IO[bytes], self.wfile), sys.stderr,
                                 self.get_environ(), multithread=True)
        handler.request_handler = self
        handler.run(app)
        self._served += 1

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.client_address[0], format % args)


class MetricsServer:
    """Listens on ``address`` when constructed (a bad or busy address fails there); ``stop()`` frees it."""

    def __init__(self, address: str, app: WSGIApp, *, limits: Limits = Limits(),
                 tls: Callable[[], ssl.SSLContext | None] = lambda: None) -> None:
        self.address = address
        host, port = parse_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = _Server((host, port), family, app, limits, tls)
        except OSError as err:
            raise errors.ConfigError(f"exporter.address {address}: cannot listen: {_bind_reason(err)}") from err
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="krakenplug-exporter-http",
                                        daemon=True)
        self._thread.start()
        scheme = "https" if self._server.tls() is not None else "http"
        logger.info("serving metrics on %s://%s (/metrics, /healthz)", scheme, self.address)

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.close_everything()


def _peer(client_address: Any) -> str:
    if isinstance(client_address, tuple) and len(client_address) >= 2:
        host, port = client_address[0], client_address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(client_address)


def _late(connection: _Connection, limits: Limits) -> str:
    if connection.state == "idle":
        return f"keep-alive connection idle for {limits.idle_timeout:g} s"
    if connection.state == "answer":
        return f"did not take its answer within {limits.answer_timeout:g} s"
    return f"no complete request within {limits.request_timeout:g} s"


def _describe(err: OSError) -> str:
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed: {err.reason or err}"
    if isinstance(err, TimeoutError):
        return "timed out"
    return err.strerror or str(err) or type(err).__name__


def _bind_reason(err: OSError) -> str:
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host: {err.strerror}"
    known = {errno.EADDRINUSE: "address already in use", errno.EADDRNOTAVAIL: "cannot assign requested address",
             errno.EACCES: "permission denied (ports below 1024 need privileges)"}
    return known.get(err.errno or 0, err.strerror or str(err))

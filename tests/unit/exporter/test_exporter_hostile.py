"""The HTTP server under hostile clients: idle and silent connections, slowloris, disconnects, floods.

Each test failed against the hand-written server this replaced (issue 11 item 1): it wedged for good
at its 32-connection cap, waited forever on a client that sent half a request, printed tracebacks for
clients that went away, and kept a listen backlog of 5.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from httpcheck import status

from krakenplug.exporter.server import Limits, MetricsServer


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]


@pytest.fixture
def serve() -> Iterator:
    servers: list[MetricsServer] = []

    def start(**limits) -> int:
        server = MetricsServer("127.0.0.1:0", _app, limits=Limits(**limits))
        server.start()
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.stop()


def _open(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_more_silent_connections_than_the_old_cap_do_not_wedge_anything(serve):
    port = serve()
    silent = _open(port, 40)  # the old server wedged for good at its 33rd connection
    try:
        assert status(port, "/metrics") == 200
        assert status(port, "/healthz") == 200
    finally:
        for sock in silent:
            sock.close()
    assert status(port) == 200


def test_at_the_cap_an_idle_keep_alive_connection_makes_room(serve, caplog):
    port = serve(max_connections=3)
    idle = []
    for _ in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/metrics")
        connection.getresponse().read()  # now idle in keep-alive
        idle.append(connection)
    try:
        with caplog.at_level(logging.WARNING, logger="krakenplug.exporter.server"):
            assert status(port) == 200
        assert any("to make room" in record.getMessage() for record in caplog.records)
    finally:
        for connection in idle:
            connection.close()


def test_at_the_cap_of_silent_clients_the_cap_frees_itself(serve):
    port = serve(max_connections=3, request_timeout=0.5)
    silent = _open(port, 3)
    try:
        # Refused while every slot is taken by a client still within its time to send a request ...
        # ... and served once their request deadline has dropped them: the cap never holds for good.
        assert _wait_until(lambda: _get_quietly(port) == 200, timeout=10)
        assert all(_closed_by_server(sock, within=5) for sock in silent)
    finally:
        for sock in silent:
            sock.close()


def _get_quietly(port: int) -> int | None:
    try:
        return status(port, timeout=2)
    except (OSError, http.client.HTTPException):
        return None


def test_a_slow_client_is_dropped_in_one_line_while_others_are_served(serve, caplog):
    port = serve(request_timeout=0.5)
    slow = socket.create_connection(("127.0.0.1", port), timeout=5)
    stop = threading.Event()

    def trickle() -> None:  # slowloris: a header byte every 0.1 s, never the blank line that ends them
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while not stop.is_set():
            try:
                slow.sendall(b"a")
            except OSError:
                return
            stop.wait(0.1)

    trickler = threading.Thread(target=trickle)
    with caplog.at_level(logging.DEBUG, logger="krakenplug.exporter"):
        trickler.start()
        try:
            assert status(port) == 200  # others are served meanwhile
            assert _closed_by_server(slow, within=5)
        finally:
            stop.set()
            trickler.join()
            slow.close()
        assert _wait_until(lambda: any("dropped client" in r.getMessage() for r in caplog.records), timeout=5)
    dropped = [r for r in caplog.records if "dropped client" in r.getMessage()]
    assert len(dropped) == 1 and "no complete request within 0.5 s" in dropped[0].getMessage()
    assert all(record.exc_info is None for record in caplog.records)


@pytest.mark.parametrize("partial", [b"GET /metr", b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept:"],
                         ids=["mid-request-line", "mid-header"])
def test_a_client_that_disconnects_mid_request_costs_no_traceback(serve, caplog, partial):
    port = serve()
    with caplog.at_level(logging.DEBUG):
        for sock in _open(port, 5, partial):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # with linger 0: a reset, the rudest way to leave
        assert status(port) == 200
        time.sleep(0.3)
    assert all(record.exc_info is None for record in caplog.records)
    assert not [r for r in caplog.records if "Traceback" in r.getMessage()]


def test_a_burst_of_200_concurrent_scrapes_all_connect_at_once(serve):
    port = serve()
    barrier = threading.Barrier(200)
    waits: list[float] = []

    def scrape() -> None:
        barrier.wait()
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            waits.append(time.monotonic() - started)

    threads = [threading.Thread(target=scrape) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A backlog of 5 dropped SYNs, and the kernel retransmits them after 1 s (then 3 s ...).
    assert len(waits) == 200 and max(waits) < 0.9, sorted(waits)[-5:]


def test_stop_returns_promptly_whatever_clients_do(caplog):
    server = MetricsServer("127.0.0.1:0", _app, limits=Limits())
    server.start()
    port = server.port
    silent = _open(port, 20)
    slow = _open(port, 5, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.request("GET", "/metrics")
    idle.getresponse().read()
    try:
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
        assert took < 1.0, f"stop() took {took:.2f} s"
        assert all(_closed_by_server(sock, within=2) for sock in silent + slow)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        for sock in silent + slow:
            sock.close()
        idle.close()


def test_a_client_that_never_reads_its_answer_is_dropped_at_the_answer_deadline(caplog):
    big = b"x" * (32 * 1024 * 1024)  # far beyond both socket buffers: the server's write must block

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(big)))])
        return [big]

    server = MetricsServer("127.0.0.1:0", app, limits=Limits(answer_timeout=0.5))
    server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="krakenplug.exporter.server"):
            reader = socket.socket()
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.connect(("127.0.0.1", server.port))
            reader.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
            assert _wait_until(lambda: any("did not take its answer within 0.5 s" in r.getMessage()
                                           for r in caplog.records), timeout=5)
            assert all(record.exc_info is None for record in caplog.records)
            reader.close()
    finally:
        server.stop()

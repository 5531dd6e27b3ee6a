"""An exporter nobody talks to sleeps: no periodic wake-ups of its accept loop or watchdog, yet deadlines hold."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from pathlib import Path

from krakenplug.exporter.server import Limits, MetricsServer


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]


def _wakeups(thread: threading.Thread) -> int:
    """Voluntary context switches of one thread: one per return from a blocking wait."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")))


def _exporter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("krakenplug-exporter-http", "krakenplug-exporter-watchdog")]


def test_an_idle_server_does_not_wake_its_threads():
    server = MetricsServer("127.0.0.1:0", _app)
    server.start()
    try:
        threads = _exporter_threads()
        assert len(threads) == 2
        time.sleep(0.2)  # let both reach their waits
        before = {t.name: _wakeups(t) for t in threads}
        time.sleep(1.5)  # the old loops woke 6 (watchdog, 0.25 s) and 7 (accept loop, 0.2 s) times here
        after = {t.name: _wakeups(t) for t in threads}
        assert after == before
    finally:
        server.stop()


def test_a_short_deadline_is_kept_while_the_watchdog_sleeps_for_a_long_one():
    server = MetricsServer("127.0.0.1:0", _app, limits=Limits(request_timeout=0.5, idle_timeout=60))
    server.start()
    try:
        keep_alive = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        keep_alive.request("GET", "/")
        assert keep_alive.getresponse().read() == b"ok\n"  # now idle: its deadline is 60 s away
        time.sleep(0.1)
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        started = time.monotonic()
        silent.settimeout(5)
        try:
            assert silent.recv(1) == b""  # closed by the server
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 2.5  # 0.5 s request timeout, not the idle connection's 60 s
        keep_alive.request("GET", "/")  # the idle one was left alone
        assert keep_alive.getresponse().read() == b"ok\n"
        keep_alive.close()
        silent.close()
    finally:
        server.stop()

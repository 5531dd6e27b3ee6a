"""Keeping the DRA sockets served: a socket deleted under the driver is served again, also when the
directory watch itself fails (the thread falls back to checking on a period)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from krakenplug.dra import server


class _BrokenWatch:
    """A directory watch whose wait fails, as a read of a broken inotify descriptor would."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.inotify = True
        self.closed = False

    def wait(self, timeout: float | None = None) -> dict[str, object]:
        raise OSError("inotify read failed")


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _socket(short_tmp: Path) -> server.SocketServer:
    served = server.SocketServer(short_tmp / "dra.sock", lambda grpc_server: None, what="test socket")
    served.start()
    return served


def test_a_deleted_socket_is_served_again(short_tmp: Path) -> None:
    served, stop = _socket(short_tmp), threading.Event()
    keeper = threading.Thread(target=server.keep_serving, args=([served], stop))
    keeper.start()
    try:
        first = served.identity
        served.path.unlink()
        _wait_for(lambda: served.path.exists() and served.identity != first, "the socket served again")
    finally:
        stop.set()
        keeper.join(10)
        served.stop()
    assert not keeper.is_alive()


def test_a_failing_watch_falls_back_to_checking_on_a_period(short_tmp: Path, caplog) -> None:
    served = _socket(short_tmp)
    watch = _BrokenWatch(short_tmp)
    follower = threading.Thread(target=server._follow, args=(watch, [served], 0.05))
    follower.start()
    try:
        first = served.identity
        served.path.unlink()
        _wait_for(lambda: served.path.exists() and served.identity != first, "the socket served again")
        assert any("checking its sockets every 0.05 s instead" in r.getMessage() for r in caplog.records)
    finally:
        watch.closed = True
        follower.join(10)
        served.stop()
    assert not follower.is_alive()

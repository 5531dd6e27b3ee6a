"""Kubelet-restart detection, the pulse that wakes the plugin's threads, and the crash-loop guard.

A restarting kubelet deletes every socket in the device-plugin directory and recreates ``kubelet.sock``;
it then knows nothing of us until we register again. The plugin learns of both from inotify on the
directory (``krakenplug.fswatch``; a stat poll every ``FALLBACK_POLL_SECONDS`` where inotify is
unavailable) and then compares what is there with what it served and registered with.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from krakenplug import errors

FALLBACK_POLL_SECONDS = 1.0  # only without inotify: the directory is stat-polled this often


class _Served(Protocol):
    socket_path: Path

    def owns_socket(self) -> bool: ...


class _Registered(Protocol):
    kubelet_socket: Path
    registered_with: tuple[int, int] | None


def identity_of(path: Path) -> tuple[int, int] | None:
    """What tells one file at ``path`` from the next one, or None when nothing is there.

    The inode alone is not enough: a file deleted and created again often gets the same inode number
    back, so its change time (the creation time, for a socket nobody touches) goes with it.
    """
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_ctime_ns


def restart_reason(server: _Served, registrar: _Registered) -> str | None:
    """Why this server must start over on a fresh socket and register again, or None."""
    if not server.owns_socket():
        return f"socket {server.socket_path} was removed"
    if registrar.registered_with is not None:
        current = identity_of(registrar.kubelet_socket)
        if current is not None and current != registrar.registered_with:
            return f"{registrar.kubelet_socket} was recreated (the kubelet restarted)"
    return None


class Pulse:
    """A counter that threads wait on: bumped by every event the plugin reacts to (directory, devices, stop)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    @property
    def count(self) -> int:
        with self._cond:
            return self._count

    def bump(self) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float | None = None) -> int:
        """Blocks until the count differs from ``seen`` (or ``timeout``); returns the count now."""
        with self._cond:
            self._cond.wait_for(lambda: self._count != seen, timeout=timeout)
            return self._count


class RestartGuard:
    """More than ``limit`` restarts within ``window_seconds`` is a crash loop: raise instead of spinning.

    Only restarts the kubelet did not cause are recorded (see ``Manager.check_kubelet``): a kubelet
    restart is an ordinary event, however often it happens.
    """

    def __init__(self, *, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._times: collections.deque[float] = collections.deque()

    def record(self, reason: str) -> None:
        now = self._clock()
        self._times.append(now)
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()
        if len(self._times) > self._limit:
            raise errors.RegistrationError(
                f"the device plugin restarted {len(self._times)} times within {self._window:g} s "
                f"(plugin.restart_limit={self._limit}, plugin.restart_window_seconds={self._window:g}); "
                f"last reason: {reason}")

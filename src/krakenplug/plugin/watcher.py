"""Kubelet-restart detection and the crash-loop guard on the restarts it causes.

A restarting kubelet deletes every socket in the device-plugin directory and recreates ``kubelet.sock``;
it then knows nothing of us until we register again. The manager polls this every few hundred
milliseconds (two ``stat`` calls per resource), which needs no inotify dependency and keeps the time
to re-register well under two seconds.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from krakenplug import errors

POLL_SECONDS = 0.25


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


class RestartGuard:
    """More than ``limit`` restarts within ``window_seconds`` is a crash loop: raise instead of spinning."""

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

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from krakenplug import errors
from krakenplug.plugin import watcher


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_restart_guard_trips_only_above_the_limit_within_the_window():
    clock = _Clock()
    guard = watcher.RestartGuard(limit=3, window_seconds=60, clock=clock)
    for _ in range(3):
        guard.record("socket removed")
        clock.now += 10
    with pytest.raises(errors.RegistrationError, match=r"restarted 4 times within 60 s.*last reason: kubelet"):
        guard.record("kubelet restarted")


def test_restarts_older_than_the_window_are_forgotten():
    clock = _Clock()
    guard = watcher.RestartGuard(limit=2, window_seconds=60, clock=clock)
    for _ in range(10):
        guard.record("socket removed")
        clock.now += 31  # never more than two within any 60 s


def _bind(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


def test_identity_changes_when_a_socket_is_created_again(short_tmp):
    path = short_tmp / "kubelet.sock"
    assert watcher.identity_of(path) is None
    first = _bind(path)
    before = watcher.identity_of(path)
    first.close()
    path.unlink()
    second = _bind(path)
    try:
        assert watcher.identity_of(path) not in (None, before)
    finally:
        second.close()


class _Server:
    def __init__(self, path: Path, owns: bool) -> None:
        self.socket_path, self._owns = path, owns

    def owns_socket(self) -> bool:
        return self._owns


class _Registrar:
    def __init__(self, kubelet_socket: Path, registered_with) -> None:
        self.kubelet_socket, self.registered_with = kubelet_socket, registered_with


def test_restart_reasons(short_tmp):
    kubelet = short_tmp / "kubelet.sock"
    listener = _bind(kubelet)
    try:
        now = watcher.identity_of(kubelet)
        ours = short_tmp / "ours.sock"
        assert watcher.restart_reason(_Server(ours, True), _Registrar(kubelet, now)) is None
        assert watcher.restart_reason(_Server(ours, True), _Registrar(kubelet, None)) is None  # not registered yet
        assert "was removed" in watcher.restart_reason(_Server(ours, False), _Registrar(kubelet, now))
        assert "kubelet restarted" in watcher.restart_reason(_Server(ours, True), _Registrar(kubelet, (1, 2)))
    finally:
        listener.close()

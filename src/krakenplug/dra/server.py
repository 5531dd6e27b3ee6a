"""The two unix sockets: the DRA service (plugins/<driver>/dra.sock) and registration (plugins_registry/).

The kubelet's plugin watcher finds the registration socket when it is created and when the kubelet
starts (it walks the directory), so a restarted kubelet registers us again by itself. What we must do is
keep the socket there: when it was deleted or replaced, it is served again on a fresh file. With a
rolling-update UID both names carry it, so an old and a new pod of the driver serve side by side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from krakenplug import errors, fswatch
from krakenplug.grpc_unix import UnixServer

logger = logging.getLogger(__name__)

MAX_WORKERS = 16  # for Prepare/Unprepare, which come in parallel for many pods (health streams wait on the loop)
MAX_CONCURRENT_RPCS = 64  # beyond this in flight a call is refused at once (RESOURCE_EXHAUSTED), not queued
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL
FALLBACK_POLL_SECONDS = 1.0  # only without inotify: the socket directories are stat-polled this often

Identity = tuple[int, int, int]


def identity_of(path: Path) -> Identity | None:
    """Which file is at ``path``; the change time goes with the inode, as a socket deleted and bound again
    often gets the same inode number back."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_ctime_ns)


def socket_paths(registry_dir: Path, plugin_dir: Path, driver: str, uid: str | None) -> tuple[Path, Path]:
    """(registration socket, DRA socket); a UID is cut to 8 characters where the full one would not fit."""
    for suffix in ([uid, uid[:8]] if uid else [None]):
        registration = registry_dir / (f"{driver}-{suffix}-reg.sock" if suffix else f"{driver}-reg.sock")
        service = plugin_dir / (f"dra-{suffix}.sock" if suffix else "dra.sock")
        if max(len(os.fsencode(registration)), len(os.fsencode(service))) <= MAX_SOCKET_PATH:
            return registration, service
    raise errors.ConfigError(f"dra.registry_dir / dra.plugins_dir: socket path {registration} or {service} is longer "
                             f"than the {MAX_SOCKET_PATH} bytes a unix socket allows; choose shorter directories "
                             "or dra.driver_name")


def accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def remove_dead_sockets(directory: Path, pattern: str, keep: Path) -> list[Path]:
    """Removes sockets matching ``pattern`` nobody serves (left by a killed pod); live ones stay."""
    removed = []
    for path in directory.glob(pattern):
        if path != keep and not accepts(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    return removed


class SocketServer:
    """A gRPC server on one unix socket; ``add`` registers the servicers on a fresh grpc.aio.Server."""

    def __init__(self, path: Path, add: Callable[[grpc.aio.Server], None], *, what: str) -> None:
        self.path = Path(path)
        self._add = add
        self._what = what
        self._grpc: UnixServer | None = None
        self.identity: Identity | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if stat.S_ISDIR(os.lstat(self.path).st_mode):
                raise errors.RegistrationError(f"cannot serve {self._what} on {self.path}: a directory is in the way")
            self.path.unlink()
        except FileNotFoundError:
            pass
        self._grpc = UnixServer(max_workers=MAX_WORKERS, thread_name_prefix=f"dra-{self.path.stem}",
                                  maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
        self._add(self._grpc.server)
        try:
            self._grpc.bind(self.path)
            self._grpc.start()
        except (RuntimeError, OSError) as err:
            self.stop()
            raise errors.RegistrationError(f"cannot serve {self._what} on {self.path}: {err}") from err
        self.identity = identity_of(self.path)
        logger.info("serving %s on %s", self._what, self.path)

    def owns_socket(self) -> bool:
        return self.identity is not None and identity_of(self.path) == self.identity

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop()
            self._grpc = None
        if self.identity is not None and identity_of(self.path) == self.identity:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.identity = None

    def restart_if_lost(self) -> bool:
        """Serves again when our socket file was deleted or replaced; True when it did."""
        if self.owns_socket():
            return False
        logger.info("%s socket %s was removed or replaced; serving it again", self._what, self.path)
        self.stop()
        self.start()
        return True


def keep_serving(sockets: Sequence[SocketServer], stop: threading.Event, *,
                 poll_seconds: float = FALLBACK_POLL_SECONDS) -> None:
    """Until ``stop``: serves a socket again as soon as its file is deleted or replaced (a kubelet restart
    wipes its plugin dirs). Woken by inotify on each socket's directory, so an idle driver sleeps; where
    inotify is unavailable the directories are stat-polled every ``poll_seconds``."""
    by_directory: dict[Path, list[SocketServer]] = {}
    for served in sockets:
        by_directory.setdefault(served.path.parent, []).append(served)
    watches = [(fswatch.DirectoryWatch(directory, names={s.path.name for s in group}, poll_seconds=poll_seconds),
                group) for directory, group in by_directory.items()]
    threads = [threading.Thread(target=_follow, args=(watch, group, poll_seconds), name=f"dra-watch-{watch.directory.name}",
                                daemon=True) for watch, group in watches]
    for thread in threads:
        thread.start()
    try:
        stop.wait()
    finally:
        for watch, _ in watches:
            watch.close()
        for thread in threads:
            thread.join(timeout=poll_seconds + 5)
        for watch, _ in watches:
            watch.release()


def _follow(watch: fswatch.DirectoryWatch, sockets: Sequence[SocketServer], poll_seconds: float) -> None:
    logger.debug("watching %s for %s (%s)", watch.directory, ", ".join(s.path.name for s in sockets),
                 "inotify" if watch.inotify else f"polled every {poll_seconds:g} s")
    try:
        _serve_lost(sockets)  # whatever went before the watch was in place
        while not watch.closed:
            watch.wait(None)
            if not watch.closed:
                _serve_lost(sockets)
    except Exception:  # top of a thread: without a fallback a wiped socket would never be served again
        logger.exception("watching %s failed; checking its sockets every %g s instead", watch.directory,
                         poll_seconds)
        while not watch.closed:
            time.sleep(poll_seconds)
            _serve_lost(sockets)


def _serve_lost(sockets: Sequence[SocketServer]) -> None:
    for served in sockets:
        try:
            served.restart_if_lost()
        except errors.RegistrationError as err:  # the directory is gone for now: the next event retries
            logger.error("%s", err)

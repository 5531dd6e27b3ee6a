"""Waiting for changes of a directory's entries: inotify where the kernel offers it, a slow stat poll where not.

The device plugin watches the kubelet's device-plugin directory (kubelet.sock recreated, our socket
deleted) and the fake backend watches its devices file this way, so an idle agent wakes only when
something happened. inotify comes from ``inotify_simple`` (a thin ctypes wrapper). Where it is missing
(no inotify in the kernel, ``fs.inotify.max_user_instances`` exhausted, the directory not there yet),
the same interface compares ``stat`` results every ``poll_seconds`` and switches to inotify as soon as
it can; ``inotify`` tells which path is in use.
"""

from __future__ import annotations

import enum
import logging
import os
import select
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["Change", "DirectoryWatch"]


class Change(enum.Enum):
    CREATED = "created"  # a new entry, maybe still empty (open(O_CREAT) before the first write)
    MOVED_IN = "moved-in"  # renamed into place: complete at once (an atomic replace)
    WRITTEN = "written"  # closed after writing (inotify) or its size/mtime moved (poll)
    REMOVED = "removed"


_Stamp = tuple[int, int, int, int]


class DirectoryWatch:
    """Changes of the entries of ``directory`` (only ``names``, when given), for one waiting thread."""

    def __init__(self, directory: Path, *, names: Collection[str] | None = None, poll_seconds: float = 1.0) -> None:
        self.directory = Path(directory)
        self._names = frozenset(names) if names is not None else None
        self._poll_seconds = poll_seconds
        self._inotify: Any = None
        self._poller = select.poll()
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._poller.register(self._wake_read, select.POLLIN)
        self._stamps: dict[str, _Stamp] = {}
        self._unavailable_reported = False
        self._closed = False
        self._released = False
        self._close_lock = threading.Lock()  # close() may race release() from another thread
        self._try_inotify()
        if self._inotify is None:
            self._stamps = self._scan()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def inotify(self) -> bool:
        """True while inotify watches the directory; False while the stat poll does."""
        return self._inotify is not None

    def wait(self, timeout: float | None = None) -> dict[str, Change]:
        """Blocks until something changed, ``timeout`` passed or :meth:`close`; returns what changed (maybe nothing)."""
        if self._closed:
            return {}
        if self._inotify is None:
            return self._wait_polling(timeout)
        ready = self._poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
        if any(fd == self._wake_read for fd, _ in ready):
            return {}
        return self._read_events()

    def close(self) -> None:
        """Ends the watch and wakes a thread blocked in :meth:`wait` (from any thread, any number of times)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            os.write(self._wake_write, b"x")

    def release(self) -> None:
        """Frees the file descriptors; call after the waiting thread has returned."""
        self.close()
        with self._close_lock:
            if self._released:
                return
            self._released = True
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None
            for fd in (self._wake_read, self._wake_write):
                os.close(fd)

    # -- inotify ---------------------------------------------------------------------------------
    def _try_inotify(self) -> None:
        try:
            import inotify_simple  # type: ignore[import-untyped]  # lazy: one-shot commands never need it

            watch = inotify_simple.INotify()
        except (ImportError, OSError) as err:
            self._report_unavailable(f"inotify is unavailable ({err})")
            return
        flags = inotify_simple.flags
        mask = (flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.CLOSE_WRITE
                | flags.DELETE_SELF | flags.MOVE_SELF)
        try:
            watch.add_watch(self.directory, mask)
        except OSError as err:
            watch.close()
            self._report_unavailable(f"cannot watch {self.directory} ({err.strerror})")
            return
        self._inotify = watch
        self._poller.register(watch.fileno(), select.POLLIN)
        if self._unavailable_reported:
            logger.info("watching %s with inotify again", self.directory)
            self._unavailable_reported = False

    def _report_unavailable(self, why: str) -> None:
        if not self._unavailable_reported:
            logger.debug("%s; checking %s every %g s instead", why, self.directory, self._poll_seconds)
            self._unavailable_reported = True

    def _read_events(self) -> dict[str, Change]:
        import inotify_simple

        flags = inotify_simple.flags
        changes: dict[str, Change] = {}
        lost = False
        for event in self._inotify.read(timeout=0):
            if event.mask & (flags.DELETE_SELF | flags.MOVE_SELF | flags.IGNORED | flags.Q_OVERFLOW):
                lost = True
                continue
            if not event.name or (self._names is not None and event.name not in self._names):
                continue
            changes[event.name] = _change_of(event.mask, flags)
        if lost:  # the directory itself went away, or events were dropped: fall back until it is back
            self._poller.unregister(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None
            before, self._stamps = self._stamps, self._scan()
            changes.update(_diff(before, self._stamps))
            self._try_inotify()
        return changes

    # -- stat poll -------------------------------------------------------------------------------
    def _wait_polling(self, timeout: float | None) -> dict[str, Change]:
        period = self._poll_seconds if timeout is None else min(timeout, self._poll_seconds)
        if self._poller.poll(int(period * 1000)):
            return {}
        self._try_inotify()
        before, self._stamps = self._stamps, self._scan()
        return _diff(before, self._stamps)

    def _scan(self) -> dict[str, _Stamp]:
        stamps: dict[str, _Stamp] = {}
        if self._names is not None:
            for name in self._names:
                stamp = _stamp(self.directory / name)
                if stamp is not None:
                    stamps[name] = stamp
            return stamps
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return stamps
        for entry in entries:
            stamp = _stamp(Path(entry.path))
            if stamp is not None:
                stamps[entry.name] = stamp
        return stamps


def _change_of(mask: int, flags: Any) -> Change:
    if mask & (flags.DELETE | flags.MOVED_FROM):
        return Change.REMOVED
    if mask & flags.MOVED_TO:
        return Change.MOVED_IN
    if mask & flags.CREATE:
        return Change.CREATED
    return Change.WRITTEN


def _stamp(path: Path) -> _Stamp | None:
    try:
        status = os.lstat(path)
    except OSError:
        return None
    return status.st_ino, status.st_ctime_ns, status.st_mtime_ns, status.st_size


def _diff(before: dict[str, _Stamp], after: dict[str, _Stamp]) -> dict[str, Change]:
    changes = {name: Change.REMOVED for name in before.keys() - after.keys()}
    for name, stamp in after.items():
        old = before.get(name)
        if old is None:
            changes[name] = Change.CREATED
        elif old[0] != stamp[0]:
            changes[name] = Change.MOVED_IN  # a new inode under the old name: replaced by a rename
        elif old != stamp:
            changes[name] = Change.WRITTEN
    return changes

"""krakenplug.fswatch.DirectoryWatch: the same changes through inotify and through the stat-poll fallback."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import inotify_simple
import pytest

from krakenplug.fswatch import Change, DirectoryWatch


@pytest.fixture(params=["inotify", "polled"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "polled":
        def unavailable(*args: object, **kwargs: object) -> None:
            raise OSError(24, "Too many open files")  # as when fs.inotify.max_user_instances is exhausted

        monkeypatch.setattr(inotify_simple, "INotify", unavailable)
    return request.param


def _collect(watch: DirectoryWatch, name: str, *, timeout: float = 5.0) -> Change:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        change = watch.wait(0.2).get(name)
        if change is not None:
            return change
    raise AssertionError(f"no change of {name} within {timeout} s")


def test_creation_replacement_writing_and_removal_are_reported(tmp_path: Path, mode: str) -> None:
    watch = DirectoryWatch(tmp_path, poll_seconds=0.05)
    try:
        assert watch.inotify is (mode == "inotify")
        (tmp_path / "a").write_text("one")
        assert _collect(watch, "a") in (Change.CREATED, Change.WRITTEN)
        watch.wait(0.1)  # the close after the write, when inotify reports it separately
        (tmp_path / "b.tmp").write_text("two")
        os.replace(tmp_path / "b.tmp", tmp_path / "a")
        assert _collect(watch, "a") is Change.MOVED_IN
        with open(tmp_path / "a", "a") as file:
            file.write("more")
        assert _collect(watch, "a") is Change.WRITTEN
        (tmp_path / "a").unlink()
        assert _collect(watch, "a") is Change.REMOVED
    finally:
        watch.release()


def test_only_the_named_entries_are_reported(tmp_path: Path, mode: str) -> None:
    watch = DirectoryWatch(tmp_path, names=["wanted"], poll_seconds=0.05)
    try:
        (tmp_path / "other").write_text("x")
        assert "other" not in watch.wait(0.3)
        (tmp_path / "wanted").write_text("y")
        assert _collect(watch, "wanted") in (Change.CREATED, Change.WRITTEN)
    finally:
        watch.release()


def test_a_missing_directory_is_polled_until_it_appears_then_watched_by_inotify(tmp_path: Path) -> None:
    directory = tmp_path / "later"
    watch = DirectoryWatch(directory, poll_seconds=0.05)
    try:
        assert not watch.inotify
        assert watch.wait(0.1) == {}
        directory.mkdir()
        (directory / "kubelet.sock").write_text("")
        assert _collect(watch, "kubelet.sock") is Change.CREATED
        assert watch.inotify
    finally:
        watch.release()


def test_close_wakes_a_waiting_thread(tmp_path: Path, mode: str) -> None:
    watch = DirectoryWatch(tmp_path, poll_seconds=30)
    result: list[dict[str, Change]] = []
    waiter = threading.Thread(target=lambda: result.append(watch.wait(None)))
    waiter.start()
    time.sleep(0.1)
    watch.close()
    waiter.join(timeout=5)
    try:
        assert not waiter.is_alive() and result == [{}]
    finally:
        watch.release()

"""Fixtures for the exporter tests: a PodResources server and a check that no thread is left behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporter_helpers import FakeKubelet


@pytest.fixture
def fake_kubelet(short_tmp: Path) -> Iterator[FakeKubelet]:
    kubelet = FakeKubelet(short_tmp / "pr.sock")
    kubelet.start()
    yield kubelet
    kubelet.stop()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every exporter thread (and HTTP connection thread) a test starts must be gone when it ends."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [thread.name for thread in set(threading.enumerate()) - before
                  if thread.name.startswith("krakenplug-") or "process_request_thread" in thread.name]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"threads left running: {leaked}"

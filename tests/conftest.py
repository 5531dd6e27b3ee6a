"""Root test configuration shared by every suite.

Node-level e2e tests (tests/e2e, marker ``e2e``) always run: they need only this machine. The kind
suite (marker ``kind``) needs a Docker host and skips with the reason when there is none.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from krakenplug.hub import DeviceHub

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here rather than in tests/unit/exporter: pytest only reads options from the initial conftests.
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files (the exporter's exposition) instead of comparing with them")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # End-to-end tests run last, after the fast feedback of the unit tests.
    items.sort(key=lambda item: 1 if "/e2e/" in str(item.fspath) else 0)


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp dir with a short path: unix socket paths are limited to 107 bytes."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Removes KRAKENPLUG_* and NODE_NAME variables so a test sees only what it sets."""
    for key in list(os.environ):
        if key.startswith("KRAKENPLUG_") or key == "NODE_NAME":
            monkeypatch.delenv(key)


ComponentRun = Callable[[Any, DeviceHub, threading.Event], None]


@pytest.fixture
def run_component() -> Iterator[Callable[..., threading.Event]]:
    """``start(run, config, backend, poll_seconds=..., name=...)`` runs a component's ``run(config, hub, stop)``
    in a thread on a DeviceHub over ``backend`` and returns ``stop``. At teardown every run is stopped
    (the hub's waiters woken) and joined; the test fails when one raised or did not return."""
    with contextlib.ExitStack() as stack:
        def start(run: ComponentRun, config: Any, backend: Any, *, poll_seconds: float,
                  name: str) -> threading.Event:
            stop = threading.Event()
            hub = DeviceHub(backend, poll_seconds=poll_seconds)
            hub.start(stop)
            failures: list[BaseException] = []

            def target() -> None:
                try:
                    run(config, hub, stop)
                except BaseException as err:  # noqa: BLE001 - reported at teardown
                    failures.append(err)

            thread = threading.Thread(target=target, name=name)
            thread.start()

            def finish() -> None:
                hub.stop_waiters(stop)
                thread.join(timeout=20)
                hub.join()
                assert not thread.is_alive(), f"{name}: run did not return after stop"
                assert not failures, f"{name}: run raised {failures[0]!r}"

            stack.callback(finish)
            return stop

        yield start

"""Root test configuration shared by every suite.

Node-level e2e tests (tests/e2e, marker ``e2e``) always run: they need only this machine. The kind
suite (marker ``kind``) needs a Docker host and skips with the reason when there is none.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

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

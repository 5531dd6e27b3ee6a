"""The one skip-or-fail rule for tests that need an external tool (helm, promtool, skopeo, node ...).

In CI (``CI=true``) a missing tool is a broken pipeline and fails the test; on a developer machine the
test skips with a message that says how to get the tool.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(message: str) -> NoReturn:
    """Fails in CI, skips elsewhere."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require(what: str, found: str | None) -> str:
    """``found``, or :func:`missing` with "``what`` not found"."""
    if found:
        return found
    missing(f"{what} not found")

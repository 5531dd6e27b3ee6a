"""Paths and the skip-or-fail rule shared by the ship tests (a module of its own: `conftest` is ambiguous)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
HELM4 = REPO_ROOT / ".tools" / "helm4" / "helm" / "helm"


def require(what: str, found: str | None) -> str:
    """``found``, or a failure in CI and a skip elsewhere that says how to get ``what``."""
    if found:
        return found
    message = f"{what} not found"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)

"""Paths shared by the ship tests (a module of its own: `conftest` is ambiguous)."""

from __future__ import annotations

from pathlib import Path

from toolcheck import require

__all__ = ["HELM4", "REPO_ROOT", "require"]

REPO_ROOT = Path(__file__).resolve().parents[3]
HELM4 = REPO_ROOT / ".tools" / "helm4" / "helm" / "helm"



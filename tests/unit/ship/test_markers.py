"""`python -m pytest -m "not e2e"` (the README's unit-test command) collects no end-to-end test."""

from __future__ import annotations

import subprocess
import sys

from shiplib import REPO_ROOT


def test_not_e2e_collects_nothing_under_tests_e2e() -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "-m", "not e2e", "tests/e2e"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected == [], "not marked e2e:\n" + "\n".join(collected)
    assert result.returncode == 5, result.stdout + result.stderr  # 5: no tests collected

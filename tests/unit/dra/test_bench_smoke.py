"""The DRA benchmark scripts still run end to end (tiny sizes; their timings are not asserted here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPTS = [("dra_prepare.py", ["--calls", "20"]), ("dra_health.py", ["--rounds", "4"])]


@pytest.mark.slow
@pytest.mark.parametrize(("script", "arguments"), SCRIPTS, ids=[name for name, _ in SCRIPTS])
def test_dra_benchmark_runs_and_prints_its_ratio(repo_root, clean_env, script, arguments) -> None:
    result = subprocess.run([sys.executable, str(repo_root / "bench" / script), *arguments],
                            check=False, capture_output=True, text=True, timeout=240, cwd=repo_root)
    # exit status 1 is a missed target (printed as MISS), which tiny sizes on a busy machine may give
    assert result.returncode in (0, 1), result.stderr
    assert "ratio" in result.stdout and "p99=" in result.stdout
    assert result.returncode == 0 or "MISS" in result.stdout

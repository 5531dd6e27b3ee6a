"""The benchmark scripts still run end to end (tiny sizes; their timings are not asserted here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPTS = [
    ("allocate_latency.py", ["--calls", "30"]),
    ("health_propagation.py", ["--flips", "4"]),
    ("restart_reregistration.py", ["--restarts", "2"]),
    ("scale.py", ["--calls", "30"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("script", "arguments"), SCRIPTS, ids=[name for name, _ in SCRIPTS])
def test_benchmark_script_runs_and_prints_its_ratio(repo_root, clean_env, script, arguments):
    result = subprocess.run([sys.executable, str(repo_root / "bench" / script), *arguments],
                            check=False, capture_output=True, text=True, timeout=240, cwd=repo_root)
    assert result.returncode == 0, result.stderr
    assert "ratio" in result.stdout and "p99=" in result.stdout

"""The benchmark scripts still run end to end (tiny sizes; their timings are not asserted here).

A script exits 1 when a target is missed, which on a busy test machine says nothing: only a crash fails.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPTS = [
    ("allocate_latency.py", ["--calls", "30"]),
    ("health_propagation.py", ["--flips", "4"]),
    ("restart_reregistration.py", ["--restarts", "2"]),
    ("scale.py", ["--calls", "30"]),
    ("startup.py", ["--starts", "1"]),
    ("idle_cpu.py", ["--seconds", "1"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("script", "arguments"), SCRIPTS, ids=[name for name, _ in SCRIPTS])
def test_benchmark_script_runs_and_prints_its_ratio(repo_root, clean_env, script, arguments):
    result = subprocess.run([sys.executable, str(repo_root / "bench" / script), *arguments],
                            check=False, capture_output=True, text=True, timeout=240, cwd=repo_root)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    if script == "scale.py":  # scale prints ratios for information only
        assert "ratio" in result.stdout
    else:
        assert any(line.startswith(("met ", "MISS ")) for line in result.stdout.splitlines()), result.stdout

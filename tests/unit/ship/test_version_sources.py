"""Scripts that derive the image tag read the version from where the package keeps it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from krakenplug import __version__

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", ["ci/build-image.sh", ".github/workflows/image.yaml"])
def test_the_version_line_yields_the_package_version(path: str) -> None:
    lines = [line.strip() for line in (REPO_ROOT / path).read_text().splitlines()
             if line.strip().startswith("version=") and "sed" in line]
    assert len(lines) == 1, f"{path}: expected one version= line, found {lines}"
    script = f'repo_root={REPO_ROOT}\n{lines[0]}\nprintf %s "$version"'
    result = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout == __version__

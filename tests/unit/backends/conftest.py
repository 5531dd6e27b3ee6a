"""Fixtures for vendor backend tests: fake vendor libraries compiled with gcc from fakelibs/*.c.

Each fake exports the vendor's real symbol names with the real struct layouts and reads its state
from a key=value fixture file (format in fakelibs/fixture.h) named by an environment variable *at
each call*, so a test can change the fixture between calls (health transitions) without reloading
the library.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

FAKELIBS = Path(__file__).parent / "fakelibs"


def compile_fake_library(source: str, soname: str, out_dir: Path, *, defines: Sequence[str] = ()) -> Path:
    """Compiles fakelibs/<source> into out_dir/<soname> with that SONAME; returns the path.

    ``defines`` become ``-D`` flags, e.g. ``["OMIT_nvmlDeviceGetPowerUsage"]`` for a variant without a symbol.
    """
    if shutil.which("gcc") is None:
        pytest.fail("gcc is required to build the fake vendor libraries")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / soname
    cmd = ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", f"-Wl,-soname,{soname}",
           "-o", str(target), str(FAKELIBS / source), f"-I{FAKELIBS}", "-lpthread"]
    cmd[1:1] = [f"-D{define}" for define in defines]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"compiling {source} failed:\n{result.stderr}")
    return target


@pytest.fixture(scope="session")
def fakelib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fakelibs")

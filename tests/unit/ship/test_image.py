"""The Dockerfile's shape, the license it ships, and the build script CI runs.

The real build, smoke test and size check run in ``ci/build-image.sh`` (called by ``.ci/run``); these
tests pin what that script and the Dockerfile promise, so a change that drops a promise fails here first.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from shiplib import REPO_ROOT
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
BUILD_SCRIPT = REPO_ROOT / "ci" / "build-image.sh"


def _stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_builder_and_runtime_bases_are_build_args_defaulting_to_python_311_slim() -> None:
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^ARG RUNTIME_IMAGE=\$\{PYTHON_IMAGE\}$", DOCKERFILE, re.MULTILINE)
    builder, final = _stages()
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert final[0] == "FROM ${RUNTIME_IMAGE}"


def test_builder_installs_wheels_only_into_a_venv_and_prunes_what_the_agent_never_imports() -> None:
    builder = "\n".join(_stages()[0])
    assert "python3 -m venv /opt/krakenplug" in builder
    assert "pip install --only-binary=:all:" in builder
    assert 'rm -rf "$site/kubernetes/aio"' in builder
    assert re.search(r"pip uninstall -y aiohttp .*yarl", builder)
    assert "pip uninstall -y pip setuptools" in builder
    assert "cp LICENSE /licenses/LICENSE" in builder


def test_final_stage_copies_the_venv_has_no_pip_or_compiler_and_runs_as_65532() -> None:
    final = _stages()[1]
    text = "\n".join(final)
    assert "COPY --from=builder /opt/krakenplug /opt/krakenplug" in final
    assert "COPY --from=builder /licenses/ /licenses/" in final
    assert not re.search(r"pip install|apt-get|apk add|gcc|build-essential|make ", text)
    assert re.search(r"ENV PATH=/opt/krakenplug/bin:\$PATH", text)
    assert "krakenplug:x:65532:65532:" in text
    assert final.count("USER 65532:65532") == 1
    assert 'ENTRYPOINT ["krakenplug"]' in final


def test_oci_labels_come_from_the_build_args() -> None:
    final = "\n".join(_stages()[1])
    assert "ARG VERSION=" in final and "ARG GIT_COMMIT=" in final
    for label, value in [("version", "${VERSION}"), ("revision", "${GIT_COMMIT}"), ("title", "krakenplug"),
                         ("licenses", "Apache-2.0")]:
        assert f'org.opencontainers.image.{label}="{value}"' in final


def test_license_is_the_full_apache_2_text_the_metadata_declares() -> None:
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    chart = (REPO_ROOT / "charts" / "krakenplug" / "Chart.yaml").read_text()
    assert "artifacthub.io/license: Apache-2.0" in chart


def _in_context(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; '!' re-includes."""
    included = True
    for pattern in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        glob = pattern.replace("**/", "*")
        if any(fnmatch.fnmatch(prefix, glob) for prefix in prefixes):
            included = negate
    return included


@pytest.mark.parametrize("path, expected", [
    ("pyproject.toml", True), ("README.md", True), ("LICENSE", True), ("src/krakenplug/cli.py", True),
    ("src/krakenplug/data/fake-devices.yaml", True), (".git/config", False), (".tools/helm4/helm/helm", False),
    ("tests/conftest.py", False), ("charts/krakenplug/Chart.yaml", False),
    ("src/krakenplug/__pycache__/cli.cpython-311.pyc", False), ("src/krakenplug.egg-info/PKG-INFO", False),
])
def test_build_context_holds_only_the_package_sources(path: str, expected: bool) -> None:
    assert _in_context(path) is expected


def test_build_script_builds_committed_sources_and_checks_what_the_issue_asks() -> None:
    script = BUILD_SCRIPT.read_text()
    assert re.search(r'git -C "\$repo_root" archive --format=tar "\$ref"', script)
    assert "max_mb=200" in script
    for promise in ["--read-only", "--cap-drop ALL", "65532 65532", "--version", " devices)", " demo 2>&1)",
                    "import pip", "/licenses/LICENSE", "--format oci-archive", "ctr --address",
                    "images import", "skopeo inspect"]:
        assert promise in script, promise
    result = subprocess.run(["bash", str(BUILD_SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 2 and "unknown argument --bogus" in result.stderr


def test_ci_run_builds_and_smoke_tests_the_image() -> None:
    ci_run = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash ci/build-image\.sh", ci_run, re.MULTILINE)


@pytest.mark.slow
def test_builder_wheel_carries_the_package_data_the_license_and_the_entry_point(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--wheel-dir", str(wheels), str(REPO_ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("krakenplug-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "krakenplug/data/fake-devices.yaml" in names
    assert "krakenplug/api/deviceplugin_v1beta1_pb2.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert re.search(r"^krakenplug = krakenplug\.cli:main$", entry_points, re.MULTILINE)
    # Installed on its own (dependencies from this interpreter), the console script runs.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    "--force-reinstall", str(wheel)], check=True, capture_output=True, timeout=300)
    result = subprocess.run([str(env_dir / "bin" / "krakenplug"), "--version"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "krakenplug 0.1.0"

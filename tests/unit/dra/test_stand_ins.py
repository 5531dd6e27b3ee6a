"""The stand-ins hold the real components to the kubelet's and the API server's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from krakenplug.api import pluginregistration_v1_pb2_grpc as reg_grpc
from krakenplug.cluster import config as cluster_config
from krakenplug.dra import kube, server, service
from krakenplug.testing.dra_api import ResourceApiServer
from krakenplug.testing.dra_kubelet import DraKubelet

from .conftest import DRIVER, NODE


@pytest.mark.parametrize(("change", "reason"), [
    ({"supported_versions": ["v2.DRAPlugin"]}, "none of the supported versions"),
    ({"type": "CSIPlugin"}, "is not DRAPlugin"),
    ({"endpoint": "/nonexistent/dra.sock"}, "does not exist"),
])
def test_the_kubelet_stand_in_refuses_bad_plugin_info_and_says_why(short_tmp: Path, change: dict, reason: str) -> None:
    endpoint = short_tmp / "dra.sock"
    endpoint.touch()
    servicer = service.RegistrationServicer(DRIVER, str(endpoint))
    for field, value in change.items():
        if isinstance(value, list):
            del servicer.info.supported_versions[:]
            servicer.info.supported_versions.extend(value)
        else:
            setattr(servicer.info, field, value)
    socket = server.SocketServer(short_tmp / "registry" / "x-reg.sock",
                                 lambda grpc_server: reg_grpc.add_RegistrationServicer_to_server(servicer, grpc_server),
                                 what="test registration")
    socket.start()
    try:
        with DraKubelet(short_tmp / "registry") as kubelet:
            (registration,) = kubelet.wait_for(lambda k: k.registrations)
        assert not registration.accepted and reason in registration.error
        assert reason in servicer.error and not servicer.registered.is_set()
    finally:
        socket.stop()


def test_the_api_stand_in_refuses_what_the_api_server_refuses(clean_env: None, tmp_path: Path) -> None:
    with ResourceApiServer() as api:
        resource = kube.ResourceApi(lambda: cluster_config.connect(api.write_kubeconfig(tmp_path / "kc")),
                                    timeout_seconds=5)
        spec = {"driver": DRIVER, "nodeName": NODE, "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1}}
        bad = [
            {"name": "Not_A_Label"},
            {"name": "ok", "attributes": {f"krakenplug.pcl.ac.cn/{'x' * 33}": {"int": 1}}},
            {"name": "ok", "attributes": {"krakenplug.pcl.ac.cn/v": {"version": "535.104.05"}}},
            {"name": "ok", "taints": [{"key": "k", "effect": "Sometimes"}]},
        ]
        for device in bad:
            body = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "s"},
                    "spec": {**spec, "devices": [device]}}
            with pytest.raises(kube.ApiError) as caught:
                resource.create_slice(body)
            assert caught.value.status == 422 and "spec.devices[0]" in str(caught.value)
        many = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "s"},
                "spec": {**spec, "devices": [{"name": f"d{i}"} for i in range(129)]}}
        with pytest.raises(kube.ApiError, match="at most 128"):
            resource.create_slice(many)

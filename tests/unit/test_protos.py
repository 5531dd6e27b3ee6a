"""The committed stubs in krakenplug.api must match proto/ and the kubelet's wire names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp
from krakenplug.api import dra_v1_pb2 as dra
from krakenplug.api import dra_v1beta1_pb2 as dra_beta
from krakenplug.api import drahealth_v1alpha1_pb2 as health
from krakenplug.api import pluginregistration_v1_pb2 as reg
from krakenplug.api import podresources_v1_pb2 as pr

PROTOS = {"deviceplugin_v1beta1.proto": dp, "podresources_v1.proto": pr, "pluginregistration_v1.proto": reg,
          "dra_v1.proto": dra, "dra_v1beta1.proto": dra_beta, "drahealth_v1alpha1.proto": health}


def _compiled_from_proto_dir(repo_root: Path, tmp_path: Path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    out = tmp_path / "set.pb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-Ikrakenplug/api=" + str(repo_root / "proto"),
                    f"--descriptor_set_out={out}", *[f"krakenplug/api/{name}" for name in PROTOS]], check=True)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return {Path(f.name).name: f for f in files}


def _clear_json_names(messages) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


@pytest.mark.parametrize("name", sorted(PROTOS))
def test_committed_stubs_match_proto_sources(name: str, repo_root: Path, tmp_path: Path) -> None:
    compiled = _compiled_from_proto_dir(repo_root, tmp_path)[name]
    committed = descriptor_pb2.FileDescriptorProto()
    PROTOS[name].DESCRIPTOR.CopyToProto(committed)
    compiled.ClearField("source_code_info")
    _clear_json_names(compiled.message_type)  # protoc adds them to descriptor sets, not to generated code
    assert committed == compiled, f"src/krakenplug/api stubs drifted from proto/{name}: run scripts/gen_protos.sh"


def test_device_plugin_api_has_the_kubelet_wire_names() -> None:
    assert dp.DESCRIPTOR.package == "v1beta1"
    services = {s.full_name: [m.name for m in s.methods] for s in dp.DESCRIPTOR.services_by_name.values()}
    assert services == {
        "v1beta1.Registration": ["Register"],
        "v1beta1.DevicePlugin": ["GetDevicePluginOptions", "ListAndWatch", "GetPreferredAllocation",
                                 "Allocate", "PreStartContainer"],
    }
    fields = lambda msg: {f.name: f.number for f in msg.DESCRIPTOR.fields}  # noqa: E731
    assert fields(dp.Device) == {"ID": 1, "health": 2, "topology": 3}
    assert fields(dp.RegisterRequest) == {"version": 1, "endpoint": 2, "resource_name": 3, "options": 4}
    assert fields(dp.ContainerAllocateRequest) == {"devices_ids": 1}
    assert fields(dp.ContainerPreferredAllocationRequest) == {
        "available_deviceIDs": 1, "must_include_deviceIDs": 2, "allocation_size": 3}
    assert fields(dp.ContainerAllocateResponse) == {
        "envs": 1, "mounts": 2, "devices": 3, "annotations": 4, "cdi_devices": 5}
    assert dp.DESCRIPTOR.services_by_name["DevicePlugin"].methods_by_name["ListAndWatch"].server_streaming


def test_pod_resources_api_has_the_kubelet_wire_names() -> None:
    assert pr.DESCRIPTOR.package == "v1"
    service = pr.DESCRIPTOR.services_by_name["PodResourcesLister"]
    assert [m.name for m in service.methods] == ["List", "GetAllocatableResources", "Get"]
    fields = lambda msg: {f.name: f.number for f in msg.DESCRIPTOR.fields}  # noqa: E731
    assert fields(pr.ContainerDevices) == {"resource_name": 1, "device_ids": 2, "topology": 3}
    assert fields(pr.ContainerResources) == {
        "name": 1, "devices": 2, "cpu_ids": 3, "memory": 4, "dynamic_resources": 5}
    assert fields(pr.ClaimResource) == {
        "cdi_devices": 1, "driver_name": 2, "pool_name": 3, "device_name": 4, "share_id": 5}


def _fields(message) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


def test_plugin_registration_api_has_the_kubelet_wire_names() -> None:
    assert reg.DESCRIPTOR.package == "pluginregistration"
    service = reg.DESCRIPTOR.services_by_name["Registration"]
    assert service.full_name == "pluginregistration.Registration"
    assert [m.name for m in service.methods] == ["GetInfo", "NotifyRegistrationStatus"]
    assert _fields(reg.PluginInfo) == {"type": 1, "name": 2, "endpoint": 3, "supported_versions": 4}
    assert _fields(reg.RegistrationStatus) == {"plugin_registered": 1, "error": 2}
    assert _fields(reg.InfoRequest) == {} and _fields(reg.RegistrationStatusResponse) == {}


@pytest.mark.parametrize(("module", "package"), [(dra, "k8s.io.kubelet.pkg.apis.dra.v1"),
                                                  (dra_beta, "k8s.io.kubelet.pkg.apis.dra.v1beta1")])
def test_dra_api_has_the_kubelet_wire_names(module, package: str) -> None:
    assert module.DESCRIPTOR.package == package
    service = module.DESCRIPTOR.services_by_name["DRAPlugin"]
    assert service.full_name == f"{package}.DRAPlugin"
    assert [m.name for m in service.methods] == ["NodePrepareResources", "NodeUnprepareResources"]
    assert _fields(module.Claim) == {"namespace": 1, "uid": 2, "name": 3}
    assert _fields(module.NodePrepareResourcesRequest) == {"claims": 1}
    assert _fields(module.NodePrepareResourcesResponse) == {"claims": 1}
    assert module.NodePrepareResourcesResponse.DESCRIPTOR.fields_by_name["claims"].message_type.GetOptions().map_entry
    assert _fields(module.NodePrepareResourceResponse) == {"devices": 1, "error": 2}
    assert _fields(module.NodeUnprepareResourcesResponse) == {"claims": 1}
    assert _fields(module.NodeUnprepareResourceResponse) == {"error": 1}
    device = {"request_names": 1, "pool_name": 2, "device_name": 3, "cdi_device_ids": 4}
    if module is dra:
        device["share_id"] = 5
        assert module.Device.DESCRIPTOR.fields_by_name["share_id"].has_presence
    assert _fields(module.Device) == device


def test_dra_health_api_has_the_kubelet_wire_names() -> None:
    assert health.DESCRIPTOR.package == "v1alpha1"
    service = health.DESCRIPTOR.services_by_name["DRAResourceHealth"]
    assert service.full_name == "v1alpha1.DRAResourceHealth"
    method = service.methods_by_name["NodeWatchResources"]
    assert method.server_streaming and not method.client_streaming
    assert dict(health.HealthStatus.items()) == {"UNKNOWN": 0, "HEALTHY": 1, "UNHEALTHY": 2}
    assert _fields(health.DeviceIdentifier) == {"pool_name": 1, "device_name": 2}
    assert _fields(health.DeviceHealth) == {"device": 1, "health": 2, "last_updated_time": 3,
                                            "health_check_timeout_seconds": 4, "message": 5}
    assert _fields(health.NodeWatchResourcesResponse) == {"devices": 1}

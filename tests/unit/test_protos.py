"""The committed stubs in krakenplug.api must match proto/ and the kubelet's wire names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp
from krakenplug.api import podresources_v1_pb2 as pr

PROTOS = {"deviceplugin_v1beta1.proto": dp, "podresources_v1.proto": pr}


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

"""Property tests: whatever Allocate and GetPreferredAllocation receive, the server answers correctly.

Each request is checked against a small independent oracle: a valid request gets a valid answer, an
invalid one gets INVALID_ARGUMENT or FAILED_PRECONDITION with a message, and the server keeps serving.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.backends import fake
from krakenplug.plugin import allocation, inventory, server

from .conftest import fake_backend, fake_devices, write_devices

REPLICAS = 2
UNHEALTHY = {"fake-3::0", "fake-3::1"}
KNOWN = [f"fake-{i}::{k}" for i in range(4) for k in range(REPLICAS)]
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def stub() -> Iterator[dp_grpc.DevicePluginStub]:
    directory = Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))
    devices = fake_devices(4)
    devices[3]["health"] = "Unhealthy"
    write_devices(directory / "devices.yaml", devices)
    backend = fake_backend(directory / "devices.yaml")
    current = inventory.Inventory.build(fake.DEFAULT_RESOURCE, backend.devices(), replicas=REPLICAS)
    served = server.ResourceServer(current, directory / "p.sock", backend=backend,
                                   limits=allocation.Limits(replicas=REPLICAS, max_devices_per_container=3))
    served.start()
    channel = grpc.insecure_channel(f"unix://{served.socket_path}")
    yield dp_grpc.DevicePluginStub(channel)
    channel.close()
    served.stop()
    shutil.rmtree(directory, ignore_errors=True)


device_ids = st.one_of(
    st.sampled_from(KNOWN),
    st.text(max_size=80),
    st.sampled_from(["", "fake-0", "fake-0::", "fake-0::2", "::0", "FAKE-0::0", "fake-0::0 "]),
    st.text(min_size=1000, max_size=5000, alphabet="x::0"),
)
id_lists = st.one_of(
    st.lists(device_ids, max_size=10),
    st.integers(min_value=100, max_value=5000).map(lambda n: [KNOWN[i % len(KNOWN)] for i in range(n)]),
)


def _allocate_is_valid(containers: list[list[str]]) -> bool:
    if not containers or any(not ids for ids in containers):
        return False
    everything = [device_id for ids in containers for device_id in ids]
    if len(everything) != len(set(everything)) or not set(everything) <= set(KNOWN) - UNHEALTHY:
        return False
    return all(len({device_id.split("::")[0] for device_id in ids}) <= 3 for ids in containers)


@PROPERTY_SETTINGS
@given(containers=st.lists(id_lists, max_size=4))
def test_allocate_answers_every_request_correctly(stub, containers):
    request = dp_pb2.AllocateRequest(
        container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=ids) for ids in containers])
    try:
        response = stub.Allocate(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code() in REFUSALS, (err.code(), err.details())
        assert err.details() and len(err.details()) < 1000
        assert not _allocate_is_valid(containers)
        return
    assert _allocate_is_valid(containers)
    assert len(response.container_responses) == len(containers)
    for ids, answer in zip(containers, response.container_responses, strict=True):
        physical = list(dict.fromkeys(device_id.split("::")[0] for device_id in ids))
        assert answer.envs["KRAKENPLUG_VISIBLE_DEVICES"] == ",".join(physical)
        assert len(answer.devices) == len(physical)


def _preferred_is_valid(available: list[str], must: list[str], size: int) -> bool:
    known = set(KNOWN)
    if size < 0 or not set(available) <= known or not set(must) <= known or not set(must) <= set(available):
        return False
    return len(set(must)) <= size <= len(set(available))


@PROPERTY_SETTINGS
@given(available=id_lists, must=st.lists(device_ids, max_size=4), size=st.integers(min_value=-3, max_value=12),
       containers=st.integers(min_value=0, max_value=2))
def test_preferred_allocation_answers_every_request_correctly(stub, available, must, size, containers):
    wanted = dp_pb2.ContainerPreferredAllocationRequest(
        available_deviceIDs=available, must_include_deviceIDs=must, allocation_size=size)
    request = dp_pb2.PreferredAllocationRequest(container_requests=[wanted] * containers)
    try:
        response = stub.GetPreferredAllocation(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code() in REFUSALS, (err.code(), err.details())
        assert err.details() and len(err.details()) < 1000
        assert containers == 0 or not _preferred_is_valid(available, must, size)
        return
    assert containers > 0 and _preferred_is_valid(available, must, size)
    assert len(response.container_responses) == containers
    for answer in response.container_responses:
        chosen = list(answer.deviceIDs)
        assert len(chosen) == size == len(set(chosen))
        assert set(must) <= set(chosen) <= set(available)

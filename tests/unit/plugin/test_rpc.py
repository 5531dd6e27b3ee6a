"""The DevicePlugin RPCs over a real unix socket: answers and every error status."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest

from krakenplug import errors
from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.backends import fake
from krakenplug.plugin import allocation, inventory, server

from .conftest import fake_backend, fake_devices, write_devices


@pytest.fixture
def serve(short_tmp) -> Iterator[Callable[..., dp_grpc.DevicePluginStub]]:
    started: list[tuple[server.ResourceServer, grpc.Channel]] = []

    def _serve(backend, *, replicas: int = 1, cdi_prefix: str | None = None,
               limits: allocation.Limits | None = None) -> dp_grpc.DevicePluginStub:
        current = inventory.Inventory.build(fake.DEFAULT_RESOURCE, backend.devices(), replicas=replicas)
        resource_server = server.ResourceServer(current, short_tmp / f"p{len(started)}.sock", backend=backend,
                                                limits=limits or allocation.Limits(replicas=replicas),
                                                cdi_prefix=cdi_prefix)
        resource_server.start()
        channel = grpc.insecure_channel(f"unix://{resource_server.socket_path}")
        started.append((resource_server, channel))
        return dp_grpc.DevicePluginStub(channel)

    yield _serve
    for resource_server, channel in started:
        channel.close()
        resource_server.stop()


def _allocate(stub, *containers):
    return stub.Allocate(dp_pb2.AllocateRequest(
        container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=ids) for ids in containers]), timeout=10)


def _prefer(stub, available, must, size):
    return stub.GetPreferredAllocation(dp_pb2.PreferredAllocationRequest(container_requests=[
        dp_pb2.ContainerPreferredAllocationRequest(available_deviceIDs=available, must_include_deviceIDs=must,
                                                   allocation_size=size)]), timeout=10)


def test_allocate_returns_device_nodes_envs_and_annotations_per_container(serve, devices_file):
    stub = serve(fake_backend(devices_file))
    response = _allocate(stub, ["fake-2", "fake-0"], ["fake-1"])
    first, second = response.container_responses
    assert first.envs["KRAKENPLUG_VISIBLE_DEVICES"] == "fake-2,fake-0"
    assert first.envs["FAKE_VISIBLE_DEVICES"] == "2,0"
    assert [(d.host_path, d.container_path, d.permissions) for d in first.devices] == [
        ("/dev/null", "/dev/krakenplug-fake2", "rw"), ("/dev/null", "/dev/krakenplug-fake0", "rw")]
    assert first.annotations["krakenplug.pcl.ac.cn/fake-devices"] == "fake-2,fake-0"
    assert list(first.cdi_devices) == []
    assert second.envs["KRAKENPLUG_VISIBLE_DEVICES"] == "fake-1"


def test_allocate_names_cdi_devices_when_enabled(serve, devices_file):
    stub = serve(fake_backend(devices_file), cdi_prefix="krakenplug.pcl.ac.cn")
    response = _allocate(stub, ["fake-1", "fake-3"])
    assert [d.name for d in response.container_responses[0].cdi_devices] == [
        "krakenplug.pcl.ac.cn/fake=fake-1", "krakenplug.pcl.ac.cn/fake=fake-3"]


def test_allocate_maps_replicas_to_each_physical_device_once(serve, devices_file):
    stub = serve(fake_backend(devices_file), replicas=4, cdi_prefix="k.example")
    response = _allocate(stub, ["fake-1::3", "fake-1::0", "fake-2::1"]).container_responses[0]
    assert response.envs["KRAKENPLUG_VISIBLE_DEVICES"] == "fake-1,fake-2"
    assert [d.container_path for d in response.devices] == ["/dev/krakenplug-fake1", "/dev/krakenplug-fake2"]
    assert [d.name for d in response.cdi_devices] == ["k.example/fake=fake-1", "k.example/fake=fake-2"]


@pytest.mark.parametrize(("containers", "code", "message"), [
    ([], grpc.StatusCode.INVALID_ARGUMENT, "container_requests is empty"),
    ([[]], grpc.StatusCode.INVALID_ARGUMENT, "devices_ids is empty"),
    ([["fake-0", "fake-9"]], grpc.StatusCode.INVALID_ARGUMENT, "unknown device ID 'fake-9'"),
    ([["fake-0", "fake-0"]], grpc.StatusCode.INVALID_ARGUMENT, "duplicate device ID 'fake-0'"),
    ([["fake-0"], ["fake-1", "fake-3"]], grpc.StatusCode.FAILED_PRECONDITION, "'fake-3' is unhealthy (ECC)"),
], ids=["no-containers", "no-ids", "unknown-id", "duplicate-id", "unhealthy-device"])
def test_allocate_errors_name_the_device_and_allocate_nothing(serve, devices_file, containers, code, message):
    devices = fake_devices(4)
    devices[3].update(health="Unhealthy", health_reason="ECC")
    write_devices(devices_file, devices)
    backend = _Counting(fake_backend(devices_file))
    with pytest.raises(grpc.RpcError) as raised:
        _allocate(serve(backend), *containers)
    assert raised.value.code() == code
    assert message in raised.value.details()
    assert backend.allocations == 0


def test_shared_requests_above_one_are_refused_when_configured(serve, devices_file):
    limits = allocation.Limits(replicas=2, fail_requests_greater_than_one=True)
    stub = serve(fake_backend(devices_file), replicas=2, limits=limits)
    assert _allocate(stub, ["fake-0::1"]).container_responses[0].envs["KRAKENPLUG_VISIBLE_DEVICES"] == "fake-0"
    with pytest.raises(grpc.RpcError) as raised:
        _allocate(stub, ["fake-0::1", "fake-1::0"])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "may ask for 1" in raised.value.details()


def test_backend_allocation_limit_counts_physical_devices(serve, devices_file):
    limits = allocation.Limits(replicas=2, max_devices_per_container=1)
    stub = serve(fake_backend(devices_file), replicas=2, limits=limits)
    assert len(_allocate(stub, ["fake-0::0", "fake-0::1"]).container_responses) == 1
    with pytest.raises(grpc.RpcError) as raised:
        _allocate(stub, ["fake-0::0", "fake-1::0"])
    assert "at most 1" in raised.value.details()


@pytest.mark.parametrize(("failure", "code"), [
    (errors.BackendUnavailable("driver not loaded"), grpc.StatusCode.UNAVAILABLE),
    (errors.DeviceQueryError("device fell off the bus"), grpc.StatusCode.INTERNAL),
    (ZeroDivisionError("bug"), grpc.StatusCode.INTERNAL),
], ids=["unavailable", "query-error", "unexpected-bug"])
def test_backend_failures_in_allocate_become_status_codes(serve, devices_file, failure, code):
    backend = _Counting(fake_backend(devices_file), failure=failure)
    with pytest.raises(grpc.RpcError) as raised:
        _allocate(serve(backend), ["fake-0"])
    assert raised.value.code() == code
    assert str(failure) in raised.value.details()


def test_preferred_allocation_over_grpc(serve, devices_file):
    stub = serve(fake_backend(devices_file))
    response = _prefer(stub, ["fake-0", "fake-1", "fake-2", "fake-3"], ["fake-3"], 2)
    assert list(response.container_responses[0].deviceIDs) == ["fake-3", "fake-2"]


@pytest.mark.parametrize(("available", "must", "size", "message"), [
    (["fake-0"], [], 3, "3 is more than the 1 available_deviceIDs"),
    (["fake-0"], [], -2, "must not be negative"),
    (["fake-0", "x"], [], 1, "unknown device ID 'x'"),
    (["fake-0"], ["fake-1"], 1, "'fake-1' is not in available_deviceIDs"),
], ids=["size-too-large", "negative-size", "unknown-id", "must-include-not-available"])
def test_preferred_allocation_errors(serve, devices_file, available, must, size, message):
    with pytest.raises(grpc.RpcError) as raised:
        _prefer(serve(fake_backend(devices_file)), available, must, size)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()


def test_preferred_allocation_without_container_requests_is_refused(serve, devices_file):
    stub = serve(fake_backend(devices_file))
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetPreferredAllocation(dp_pb2.PreferredAllocationRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_options_and_pre_start(serve, devices_file):
    stub = serve(fake_backend(devices_file))
    options = stub.GetDevicePluginOptions(dp_pb2.Empty(), timeout=10)
    assert (options.get_preferred_allocation_available, options.pre_start_required) == (True, False)
    assert stub.PreStartContainer(dp_pb2.PreStartContainerRequest(devices_ids=["fake-0"]), timeout=10) == \
        dp_pb2.PreStartContainerResponse()


class _Counting:
    """Wraps the fake backend to count allocate calls, or to make them fail."""

    name = "counting"

    def __init__(self, inner, *, failure: Exception | None = None) -> None:
        self._inner = inner
        self._failure = failure
        self.allocations = 0

    def devices(self):
        return self._inner.devices()

    def allocate(self, devices):
        self.allocations += 1
        if self._failure is not None:
            raise self._failure
        return self._inner.allocate(devices)

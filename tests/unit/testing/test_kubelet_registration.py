"""Registration, ListAndWatch and restarts of the kubelet simulator, driven by a real gRPC stub plugin."""

from __future__ import annotations

import json
import os

import grpc
import pytest
from sim_stub_plugin import RESOURCE, device

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.testing import DeviceView
from krakenplug.testing.checkpoint import CHECKPOINT_FILE

TWO = [device("d0", numa=(0,)), device("d1", numa=(1,))]


def test_register_follows_the_kubelet_call_order_and_counts_healthy_devices(kubelet, make_plugin):
    plugin = make_plugin(TWO + [device("d2", "Unhealthy")])
    plugin.register(kubelet.socket_path, RESOURCE)

    state = kubelet.wait_for_resource(RESOURCE, capacity=3)

    assert (state.capacity, state.allocatable, state.connected, state.updates) == (3, 2, True, 1)
    assert state.devices["d0"] == DeviceView("Healthy", (0,))
    assert state.devices["d2"] == DeviceView("Unhealthy", ())
    assert kubelet.calls == ["Register", "GetDevicePluginOptions", "ListAndWatch"]
    assert [r.resource_name for r in kubelet.registrations] == [RESOURCE]
    assert state.endpoint == "stub.sock"


def test_a_register_without_deadline_is_accepted(kubelet, make_plugin):
    # Go plugins (NVIDIA's, the kubelet's sample) call Register with a context that has no deadline.
    plugin = make_plugin(TWO)
    plugin.register(kubelet.socket_path, RESOURCE, timeout=None)

    state = kubelet.wait_for_resource(RESOURCE, capacity=2)

    assert state.connected and kubelet.calls[:2] == ["Register", "GetDevicePluginOptions"]


def test_options_come_from_get_device_plugin_options_not_from_the_request(kubelet, make_plugin, short_tmp):
    plugin = make_plugin(TWO, preferred=True)
    with grpc.insecure_channel(f"unix://{kubelet.socket_path}") as channel:
        from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc

        dp_grpc.RegistrationStub(channel).Register(dp_pb2.RegisterRequest(
            version="v1beta1", endpoint=plugin.socket_path.name, resource_name=RESOURCE,
            options=dp_pb2.DevicePluginOptions(pre_start_required=True)), timeout=30)

    state = kubelet.wait_for_resource(RESOURCE, capacity=2)

    assert state.options.get_preferred_allocation_available is True
    assert state.options.pre_start_required is False


@pytest.mark.parametrize(("version", "resource", "message"), [
    ("v1alpha", RESOURCE, 'requested API version "v1alpha" is not supported by kubelet. '
                          'Supported version is "v1beta1"'),
    ("v1beta1", "gpu", 'the ResourceName "gpu" is invalid'),
    ("v1beta1", "kubernetes.io/gpu", 'the ResourceName "kubernetes.io/gpu" is invalid'),
])
def test_a_bad_register_is_refused_with_the_kubelet_message(kubelet, make_plugin, version, resource, message):
    plugin = make_plugin(TWO)

    with pytest.raises(grpc.RpcError) as caught:
        plugin.register(kubelet.socket_path, resource, version=version)

    assert caught.value.code() is grpc.StatusCode.UNKNOWN
    assert caught.value.details() == message
    assert kubelet.resources() == {}
    assert plugin.calls == []


def test_failing_options_fail_register_and_listandwatch_is_never_called(kubelet, make_plugin):
    plugin = make_plugin(TWO)
    plugin.failures["GetDevicePluginOptions"] = (grpc.StatusCode.INTERNAL, "options broken")

    with pytest.raises(grpc.RpcError) as caught:
        plugin.register(kubelet.socket_path, RESOURCE)

    assert "failed to get device plugin options" in caught.value.details()
    assert "options broken" in caught.value.details()
    assert [name for name, _ in plugin.calls] == ["GetDevicePluginOptions"]
    assert RESOURCE not in kubelet.resources()


def test_register_fails_when_the_plugin_socket_cannot_be_dialed(make_kubelet, make_plugin):
    kubelet = make_kubelet(dial_timeout=0.5)
    plugin = make_plugin(TWO)

    with pytest.raises(grpc.RpcError) as caught:
        plugin.register(kubelet.socket_path, RESOURCE, endpoint="missing.sock")

    assert caught.value.details().startswith("failed to dial device plugin")
    assert "missing.sock" in caught.value.details()


def test_an_absolute_endpoint_is_joined_under_the_directory(kubelet, make_plugin):
    plugin = make_plugin(TWO)
    plugin.register(kubelet.socket_path, RESOURCE, endpoint="/stub.sock")

    assert kubelet.wait_for_resource(RESOURCE, capacity=2).endpoint == "/stub.sock"


def test_every_message_replaces_the_device_set(kubelet, make_plugin):
    plugin = make_plugin(TWO)
    plugin.register(kubelet.socket_path, RESOURCE)
    kubelet.wait_for_resource(RESOURCE, allocatable=2)

    plugin.update([device("d0", "Unhealthy", (0,)), device("d1", numa=(1,))])
    assert kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=1).devices["d0"].health == "Unhealthy"

    plugin.update([device("d1"), device("d1", "healthy")])  # duplicate ID: the last entry wins
    state = kubelet.wait_for_resource(RESOURCE, capacity=1, allocatable=0)
    assert state.devices == {"d1": DeviceView("healthy", ())}  # health is compared case-sensitively
    assert state.updates == 3


def test_a_stream_that_ends_marks_every_device_unhealthy_and_is_not_reopened(kubelet, make_plugin):
    plugin = make_plugin(TWO)
    plugin.fail_stream_after_first = True
    plugin.register(kubelet.socket_path, RESOURCE)

    kubelet.wait_for(lambda r: r[RESOURCE].updates == 1 and not r[RESOURCE].connected)

    state = kubelet.resources()[RESOURCE]
    assert (state.capacity, state.allocatable) == (2, 0)
    assert kubelet.calls.count("ListAndWatch") == 1

    plugin.fail_stream_after_first = False
    plugin.register(kubelet.socket_path, RESOURCE)  # recovery needs a new Register
    assert kubelet.wait_for_resource(RESOURCE, allocatable=2).capacity == 2
    assert kubelet.calls.count("ListAndWatch") == 2


def test_capacity_drops_to_zero_after_the_grace_period(make_kubelet, make_plugin):
    kubelet = make_kubelet(endpoint_grace_seconds=0.3)
    plugin = make_plugin(TWO)
    plugin.register(kubelet.socket_path, RESOURCE)
    kubelet.wait_for_resource(RESOURCE, capacity=2)

    plugin.stop()

    kubelet.wait_for(lambda r: not r[RESOURCE].connected and r[RESOURCE].capacity == 2, what="disconnect")
    state = kubelet.wait_for(lambda r: r[RESOURCE].capacity == 0, what="grace expiry")[RESOURCE]
    assert (state.allocatable, state.connected) == (0, False)


def test_a_new_register_replaces_the_endpoint_and_ends_the_old_stream(kubelet, make_plugin):
    old = make_plugin(TWO, name="old.sock")
    old.register(kubelet.socket_path, RESOURCE)
    kubelet.wait_for_resource(RESOURCE, capacity=2)

    new = make_plugin([device("n0")], name="new.sock")
    new.register(kubelet.socket_path, RESOURCE, endpoint="new.sock")

    state = kubelet.wait_for_resource(RESOURCE, capacity=1)
    assert (state.endpoint, list(state.devices)) == ("new.sock", ["n0"])
    old.update([device("d0")])  # the old plugin's news no longer count
    new.update([device("n0"), device("n1")])
    assert list(kubelet.wait_for_resource(RESOURCE, capacity=2).devices) == ["n0", "n1"]


def test_restart_removes_sockets_and_waits_for_the_plugin_to_register_again(kubelet, make_plugin, short_tmp):
    plugin = make_plugin(TWO)
    plugin.register(kubelet.socket_path, RESOURCE)
    kubelet.wait_for_resource(RESOURCE, capacity=2)
    (short_tmp / "notes.txt").write_text("kept")
    (short_tmp / "keep").mkdir()
    # A second link keeps the old inode in use, so a new socket cannot get the same number.
    os.link(kubelet.socket_path, short_tmp / "keep" / "old-kubelet.sock")
    inode = os.stat(kubelet.socket_path).st_ino

    kubelet.restart()

    assert not plugin.socket_path.exists()
    assert (short_tmp / "notes.txt").read_text() == "kept"
    assert (short_tmp / "keep" / "old-kubelet.sock").exists()  # sub-directories are left alone
    assert kubelet.socket_path.exists() and os.stat(kubelet.socket_path).st_ino != inode
    state = kubelet.resources()[RESOURCE]
    assert (state.capacity, state.connected, state.updates) == (0, False, 0)

    plugin.stop()
    again = make_plugin(TWO)
    again.register(kubelet.socket_path, RESOURCE)
    assert kubelet.wait_for_resource(RESOURCE, allocatable=2).capacity == 2
    assert len(kubelet.registrations) == 2


def test_stop_ends_the_plugin_stream(kubelet, make_plugin):
    plugin = make_plugin(TWO)
    plugin.register(kubelet.socket_path, RESOURCE)
    kubelet.wait_for_resource(RESOURCE, capacity=2)

    kubelet.stop()

    assert not kubelet.resources()[RESOURCE].connected
    with pytest.raises(grpc.RpcError):
        plugin.register(kubelet.socket_path, RESOURCE)


def test_wait_for_times_out_with_the_current_state(kubelet, make_plugin):
    plugin = make_plugin(TWO)
    plugin.register(kubelet.socket_path, RESOURCE)
    kubelet.wait_for_resource(RESOURCE, capacity=2)

    with pytest.raises(TimeoutError) as caught:
        kubelet.wait_for_resource(RESOURCE, capacity=5, timeout=0.2)

    message = str(caught.value)
    assert "example.com/gpu connected with capacity=5" in message
    assert "capacity=2 allocatable=2" in message
    assert "d0:Healthy@numa0" in message


def test_the_checkpoint_file_lists_registered_devices(kubelet, make_plugin, short_tmp):
    plugin = make_plugin(TWO)
    plugin.register(kubelet.socket_path, RESOURCE)
    kubelet.wait_for_resource(RESOURCE, capacity=2)

    data = json.loads((short_tmp / CHECKPOINT_FILE).read_text())["Data"]

    assert data["RegisteredDevices"] == {RESOURCE: ["d0", "d1"]}
    assert data["PodDeviceEntries"] == []

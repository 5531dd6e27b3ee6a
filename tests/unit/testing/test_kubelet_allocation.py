"""Pod admission through the kubelet simulator: device choice, preferred allocation, errors, release."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from sim_stub_plugin import RESOURCE, device

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.testing import AdmissionError
from krakenplug.testing.checkpoint import CHECKPOINT_FILE

FOUR = [device("d0", numa=(0,)), device("d1", numa=(0,)), device("d2", numa=(1,)), device("d3", "Unhealthy")]


@pytest.fixture
def registered(kubelet, make_plugin):
    def register(devices=FOUR, **options):
        plugin = make_plugin(devices, **options)
        plugin.register(kubelet.socket_path, RESOURCE)
        kubelet.wait_for_resource(RESOURCE, capacity=len(devices))
        return plugin

    return register


def sent_ids(plugin) -> list[list[str]]:
    return [list(request.container_requests[0].devices_ids) for request in plugin.called("Allocate")]


def test_allocate_sends_one_container_request_with_free_healthy_devices(kubelet, registered):
    plugin = registered()

    first = kubelet.allocate(RESOURCE, 2, pod="p0")
    second = kubelet.allocate(RESOURCE, 1, pod="p1")

    assert sent_ids(plugin) == [["d0", "d1"], ["d2"]]
    assert all(len(request.container_requests) == 1 for request in plugin.called("Allocate"))
    assert first.container_responses[0].envs["STUB_DEVICES"] == "d0,d1"
    assert second.container_responses[0].envs["STUB_DEVICES"] == "d2"
    assert "GetPreferredAllocation" not in kubelet.calls  # the plugin did not offer it


def test_no_free_healthy_device_left_fails_admission(kubelet, registered):
    registered()
    kubelet.allocate(RESOURCE, 3, pod="p0")

    with pytest.raises(AdmissionError, match=r"Requested: 1, Available: 0") as caught:
        kubelet.allocate(RESOURCE, pod="p1")

    assert caught.value.code is None


def test_a_resource_without_healthy_devices_fails_admission(kubelet, registered):
    registered([device("d0", "Unhealthy")])

    with pytest.raises(AdmissionError, match="no healthy devices present; cannot allocate unhealthy devices"):
        kubelet.allocate(RESOURCE, pod="p0")


def test_an_unregistered_resource_fails_admission(kubelet):
    with pytest.raises(AdmissionError, match="cannot allocate unregistered device example.com/other"):
        kubelet.allocate("example.com/other", pod="p0")


def test_preferred_allocation_is_asked_with_free_healthy_devices_and_honoured(kubelet, registered):
    plugin = registered(preferred=True)
    kubelet.allocate(RESOURCE, 1, pod="p0")  # the stub prefers the last IDs offered: d2

    kubelet.allocate(RESOURCE, 1, pod="p1")

    requests = [r.container_requests[0] for r in plugin.called("GetPreferredAllocation")]
    assert [list(r.available_deviceIDs) for r in requests] == [["d0", "d1", "d2"], ["d0", "d1"]]
    assert [list(r.must_include_deviceIDs) for r in requests] == [[], []]
    assert [r.allocation_size for r in requests] == [1, 1]
    assert sent_ids(plugin) == [["d2"], ["d1"]]
    assert kubelet.calls[-4:] == ["GetPreferredAllocation", "Allocate", "GetPreferredAllocation", "Allocate"]


def test_a_preferred_answer_is_intersected_with_candidates_and_topped_up(kubelet, registered):
    plugin = registered(preferred=True)
    plugin.preferred_answer = ["d3", "ghost", "d1"]  # unhealthy, unknown, fine

    kubelet.allocate(RESOURCE, 2, pod="p0")

    assert sent_ids(plugin) == [["d1", "d0"]]


def test_preferred_allocation_can_be_switched_off(make_kubelet, make_plugin):
    kubelet = make_kubelet(call_preferred_allocation=False)
    plugin = make_plugin(FOUR, preferred=True)
    plugin.register(kubelet.socket_path, RESOURCE)
    kubelet.wait_for_resource(RESOURCE, capacity=4)

    kubelet.allocate(RESOURCE, 1, pod="p0")

    assert plugin.called("GetPreferredAllocation") == []


@pytest.mark.parametrize("method", ["Allocate", "GetPreferredAllocation"])
def test_plugin_errors_surface_with_their_status(kubelet, registered, method):
    plugin = registered(preferred=True)
    plugin.failures[method] = (grpc.StatusCode.INVALID_ARGUMENT, "device d9 is unknown")

    with pytest.raises(AdmissionError) as caught:
        kubelet.allocate(RESOURCE, pod="p0")

    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details == "device d9 is unknown"
    assert caught.value.method == method
    assert str(caught.value) == (f"{method} failed due to rpc error: code = InvalidArgument "
                                 f"desc = device d9 is unknown, which is unexpected")
    assert kubelet.allocations() == []


def test_explicit_ids_go_to_the_plugin_unchecked(kubelet, registered):
    plugin = registered()

    kubelet.allocate(RESOURCE, pod="p0", ids=["d3", "nope"])

    assert sent_ids(plugin) == [["d3", "nope"]]
    with pytest.raises(ValueError, match="count=1 does not match"):
        kubelet.allocate(RESOURCE, 1, pod="p1", ids=["d0", "d1"])


def test_a_restarted_container_keeps_its_devices_without_a_new_allocate(kubelet, registered):
    plugin = registered()
    first = kubelet.allocate(RESOURCE, 2, pod="p0")

    again = kubelet.allocate(RESOURCE, 2, pod="p0")

    assert again == first
    assert len(plugin.called("Allocate")) == 1


def test_pre_start_is_called_when_the_plugin_requires_it(kubelet, registered):
    plugin = registered(pre_start=True)

    kubelet.allocate(RESOURCE, 2, pod="p0")

    assert [list(r.devices_ids) for r in plugin.called("PreStartContainer")] == [["d0", "d1"]]
    assert kubelet.calls[-2:] == ["Allocate", "PreStartContainer"]


def test_release_frees_the_devices(kubelet, registered):
    plugin = registered()
    kubelet.allocate(RESOURCE, 3, pod="p0")

    kubelet.release("p0")
    kubelet.allocate(RESOURCE, 3, pod="p1")

    assert sent_ids(plugin) == [["d0", "d1", "d2"], ["d0", "d1", "d2"]]
    with pytest.raises(KeyError, match="pod p0 in namespace default holds no devices"):
        kubelet.release("p0")


def test_allocating_on_a_disconnected_resource_fails(kubelet, registered):
    plugin = registered()
    plugin.stop()
    kubelet.wait_for(lambda r: not r[RESOURCE].connected)

    with pytest.raises(AdmissionError, match="no healthy devices present"):
        kubelet.allocate(RESOURCE, pod="p0")
    with pytest.raises(AdmissionError, match="has been stopped"):
        kubelet.allocate(RESOURCE, pod="p0", ids=["d0"])


def test_allocations_are_recorded_with_numa_and_checkpointed(kubelet, registered, short_tmp):
    registered()

    response = kubelet.allocate(RESOURCE, 2, pod="p0", namespace="ml", container="trainer")

    (held,) = kubelet.allocations()
    assert (held.pod, held.namespace, held.container, held.resource) == ("p0", "ml", "trainer", RESOURCE)
    assert held.device_numa == (("d0", (0,)), ("d1", (0,)))
    assert held.container_response() == response.container_responses[0]
    (entry,) = json.loads((short_tmp / CHECKPOINT_FILE).read_text())["Data"]["PodDeviceEntries"]
    assert entry["DeviceIDs"] == {"0": ["d0", "d1"]}
    assert entry["PodUID"] == held.pod_uid
    saved = dp_pb2.ContainerAllocateResponse.FromString(base64.b64decode(entry["AllocResp"]))
    assert saved == response.container_responses[0]

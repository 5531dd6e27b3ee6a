"""The simulator's PodResources server, queried over its unix socket like the exporter does."""

from __future__ import annotations

import grpc
import pytest
from sim_stub_plugin import RESOURCE, device

from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc
from krakenplug.testing.podresources import TokenBucket

DEVICES = [device("d0", numa=(0,)), device("d1", numa=(0, 1)), device("d2"), device("d3", "Unhealthy", (1,))]


@pytest.fixture
def registered(kubelet, make_plugin):
    plugin = make_plugin(DEVICES)
    plugin.register(kubelet.socket_path, RESOURCE)
    kubelet.wait_for_resource(RESOURCE, capacity=4)
    return plugin


def flat(devices) -> list[tuple[str, list[str], list[int]]]:
    return [(d.resource_name, list(d.device_ids), [n.ID for n in d.topology.nodes]) for d in devices]


def test_list_flattens_devices_per_numa_node(kubelet, registered, pod_resources):
    kubelet.allocate(RESOURCE, 3, pod="p0", namespace="ml", container="trainer")
    kubelet.allocate(RESOURCE, 1, pod="p0", namespace="ml", container="sidecar", ids=["d3"])

    (pod,) = pod_resources.List(pr_pb2.ListPodResourcesRequest(), timeout=5).pod_resources

    assert (pod.name, pod.namespace) == ("p0", "ml")
    assert [c.name for c in pod.containers] == ["trainer", "sidecar"]
    assert flat(pod.containers[0].devices) == [
        (RESOURCE, ["d0"], [0]), (RESOURCE, ["d1"], [0]), (RESOURCE, ["d1"], [1]), (RESOURCE, ["d2"], [])]
    assert not pod.containers[0].devices[3].HasField("topology")
    assert flat(pod.containers[1].devices) == [(RESOURCE, ["d3"], [1])]


def test_allocations_survive_a_restart_and_release_removes_them(kubelet, registered, pod_resources):
    kubelet.allocate(RESOURCE, 1, pod="p0")
    kubelet.allocate(RESOURCE, 1, pod="p1")

    kubelet.restart()
    listed = pod_resources.List(pr_pb2.ListPodResourcesRequest(), timeout=5).pod_resources
    assert [(p.name, flat(p.containers[0].devices)) for p in listed] == [
        ("p0", [(RESOURCE, ["d0"], [0])]), ("p1", [(RESOURCE, ["d1"], [0]), (RESOURCE, ["d1"], [1])])]

    kubelet.release("p0")
    listed = pod_resources.List(pr_pb2.ListPodResourcesRequest(), timeout=5).pod_resources
    assert [p.name for p in listed] == ["p1"]


def test_a_pod_deleted_while_the_kubelet_is_down_is_gone_after_start(kubelet, registered, pod_resources):
    kubelet.allocate(RESOURCE, 1, pod="p0")
    kubelet.stop()

    kubelet.release("p0")
    kubelet.start()

    assert list(pod_resources.List(pr_pb2.ListPodResourcesRequest(), timeout=5).pod_resources) == []


def test_get_allocatable_reports_healthy_devices(kubelet, registered, pod_resources):
    kubelet.allocate(RESOURCE, 1, pod="p0")  # allocated devices are still allocatable

    response = pod_resources.GetAllocatableResources(pr_pb2.AllocatableResourcesRequest(), timeout=5)

    assert flat(response.devices) == [
        (RESOURCE, ["d0"], [0]), (RESOURCE, ["d1"], [0]), (RESOURCE, ["d1"], [1]), (RESOURCE, ["d2"], [])]


def test_get_finds_one_pod_or_names_the_missing_one(kubelet, registered, pod_resources):
    kubelet.allocate(RESOURCE, 1, pod="p0", namespace="ml")
    kubelet.allocate(RESOURCE, 1, pod="p0", namespace="other")

    found = pod_resources.Get(pr_pb2.GetPodResourcesRequest(pod_name="p0", pod_namespace="other"), timeout=5)
    assert flat(found.pod_resources.containers[0].devices)[0][1] == ["d1"]

    with pytest.raises(grpc.RpcError) as caught:
        pod_resources.Get(pr_pb2.GetPodResourcesRequest(pod_name="p9", pod_namespace="ml"), timeout=5)
    assert caught.value.details() == "pod p9 in namespace ml not found"


def test_v1alpha1_list_is_served_on_the_same_socket(kubelet, registered):
    kubelet.allocate(RESOURCE, 1, pod="p0", ids=["d1"])

    with grpc.insecure_channel(f"unix://{kubelet.pod_resources_socket}") as channel:
        call = channel.unary_unary("/v1alpha1.PodResourcesLister/List",
                                   request_serializer=pr_pb2.ListPodResourcesRequest.SerializeToString,
                                   response_deserializer=pr_pb2.ListPodResourcesResponse.FromString)
        (pod,) = call(pr_pb2.ListPodResourcesRequest(), timeout=5).pod_resources

    assert flat(pod.containers[0].devices) == [(RESOURCE, ["d1"], []), (RESOURCE, ["d1"], [])]
    assert not any(d.HasField("topology") for d in pod.containers[0].devices)


def test_calls_beyond_the_burst_are_rejected(make_kubelet):
    kubelet = make_kubelet(pod_resources_rate_limit=(0.001, 3))  # effectively no refill during the test

    with grpc.insecure_channel(f"unix://{kubelet.pod_resources_socket}") as channel:
        stub = pr_grpc.PodResourcesListerStub(channel)
        for _ in range(3):
            stub.List(pr_pb2.ListPodResourcesRequest(), timeout=5)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetAllocatableResources(pr_pb2.AllocatableResourcesRequest(), timeout=5)

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == "rejected by rate limit"


def test_the_rate_limit_can_be_switched_off(make_kubelet):
    kubelet = make_kubelet(pod_resources_rate_limit=None)

    with grpc.insecure_channel(f"unix://{kubelet.pod_resources_socket}") as channel:
        stub = pr_grpc.PodResourcesListerStub(channel)
        responses = [stub.List(pr_pb2.ListPodResourcesRequest(), timeout=5) for _ in range(40)]

    assert len(responses) == 40


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(100.0, 10, clock=lambda: now[0])

    assert [bucket.allow() for _ in range(11)] == [True] * 10 + [False]
    now[0] += 0.0625  # 6.25 tokens at 100 per second
    assert [bucket.allow() for _ in range(7)] == [True] * 6 + [False]
    now[0] += 60  # never more than the burst
    assert sum(bucket.allow() for _ in range(20)) == 10
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBucket(1.0, 0)

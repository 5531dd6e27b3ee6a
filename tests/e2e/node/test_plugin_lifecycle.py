"""The agent's device plugin through the kubelet's eyes: registration, allocation, restarts, shutdown.

Scenarios of the kubelet's own device-plugin e2e tests that apply to a plugin (basic, kubelet restart,
plugin restart, SIGTERM), run against a real ``krakenplug run`` process and the kubelet simulator.
"""

from __future__ import annotations

import stat
import time

import grpc
import pytest

from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/fake"
WAIT = 30.0
DEFAULT_IDS = ["fake-0", "fake-1", "fake-2", "fake-3"]


def listed_pods(kubelet) -> list[tuple[str, str, str, str, list[str]]]:
    """(namespace, pod, container, resource, device IDs) from PodResources List, de-duplicated."""
    with grpc.insecure_channel(f"unix://{kubelet.pod_resources_socket}") as channel:
        response = pr_grpc.PodResourcesListerStub(channel).List(pr_pb2.ListPodResourcesRequest(), timeout=10)
    rows = []
    for pod in response.pod_resources:
        for container in pod.containers:
            for resource in dict.fromkeys(d.resource_name for d in container.devices):
                ids = dict.fromkeys(i for d in container.devices if d.resource_name == resource for i in d.device_ids)
                rows.append((pod.namespace, pod.name, container.name, resource, list(ids)))
    return rows


def sockets_in(directory) -> set[str]:
    return {entry.name for entry in directory.iterdir() if stat.S_ISSOCK(entry.lstat().st_mode)}


def test_registers_all_devices_and_a_pod_gets_one(kubelet, start_agent):
    start_agent()

    state = kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    assert sorted(state.devices) == DEFAULT_IDS
    assert state.devices["fake-0"].numa_nodes == (0,)
    assert state.devices["fake-2"].numa_nodes == (1,)
    (registration,) = kubelet.registrations
    assert registration.version == "v1beta1"
    assert (kubelet.directory / registration.endpoint).exists()

    response = kubelet.allocate(RESOURCE, 1, pod="trainer-0", namespace="ml")

    (held,) = kubelet.allocations()
    (device_id,) = held.device_ids
    container = response.container_responses[0]
    assert device_id in container.envs["KRAKENPLUG_VISIBLE_DEVICES"]
    assert len(container.devices) == 1
    assert listed_pods(kubelet) == [("ml", "trainer-0", "main", RESOURCE, [device_id])]


def test_a_restarted_container_keeps_its_device_and_a_second_pod_gets_another(kubelet, start_agent):
    start_agent()
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    first = kubelet.allocate(RESOURCE, 1, pod="trainer-0")

    again = kubelet.allocate(RESOURCE, 1, pod="trainer-0")  # the same container starting again
    other = kubelet.allocate(RESOURCE, 1, pod="trainer-1")

    assert again == first
    assert kubelet.calls.count("Allocate") == 2
    held = [a.device_ids for a in kubelet.allocations()]
    assert len(held) == 2 and held[0] != held[1]
    assert other.container_responses[0].envs["KRAKENPLUG_VISIBLE_DEVICES"] == held[1][0]


def test_kubelet_restart_makes_the_plugin_register_again(kubelet, start_agent):
    start_agent()
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    kubelet.allocate(RESOURCE, 2, pod="trainer-0")
    before = listed_pods(kubelet)

    kubelet.restart()

    state = kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    assert sorted(state.devices) == DEFAULT_IDS
    assert len(kubelet.registrations) == 2
    assert listed_pods(kubelet) == before
    response = kubelet.allocate(RESOURCE, 2, pod="trainer-1")  # the new connection serves Allocate
    assert len(response.container_responses) == 1
    assert set(kubelet.allocations()[1].device_ids).isdisjoint(kubelet.allocations()[0].device_ids)


def test_plugin_restart_reregisters_the_same_devices(kubelet, start_agent):
    first = start_agent()
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    kubelet.allocate(RESOURCE, 1, pod="trainer-0")

    first.kill()  # no clean-up at all, as when the plugin pod is deleted hard
    kubelet.wait_for(lambda r: not r[RESOURCE].connected, timeout=WAIT, what="stream end after kill")
    state = kubelet.resources()[RESOURCE]
    assert (state.capacity, state.allocatable) == (4, 0)

    start_agent()

    state = kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    assert sorted(state.devices) == DEFAULT_IDS
    assert len(kubelet.registrations) == 2
    assert [row[1] for row in listed_pods(kubelet)] == ["trainer-0"]


def test_kubelet_and_plugin_restart_together_keep_the_assignment(kubelet, start_agent):
    first = start_agent()
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    kubelet.allocate(RESOURCE, 2, pod="trainer-0")
    before = listed_pods(kubelet)

    first.kill()
    kubelet.restart()
    start_agent()

    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    assert listed_pods(kubelet) == before


def test_sigterm_removes_the_sockets_and_exits_zero(kubelet, start_agent, node):
    agent = start_agent()
    kubelet.wait_for_resource(RESOURCE, capacity=4, timeout=WAIT)
    assert sockets_in(node.plugin_dir) - {"kubelet.sock"}

    assert agent.terminate() == 0

    assert sockets_in(node.plugin_dir) == {"kubelet.sock"}
    state = kubelet.wait_for(lambda r: not r[RESOURCE].connected, timeout=WAIT)[RESOURCE]
    assert state.allocatable == 0


def test_without_devices_the_agent_keeps_running_and_registers_once_devices_appear(kubelet, start_agent, node):
    full = node.devices.load()
    node.devices.write({"devices": []})
    agent = start_agent()

    # Nothing must happen: give the agent ample time to start, then check it neither exited nor registered.
    time.sleep(3)
    assert agent.running, agent.log()
    assert kubelet.registrations == []

    node.devices.write(full)
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    assert agent.running

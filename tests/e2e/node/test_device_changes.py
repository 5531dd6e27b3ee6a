"""Device health and inventory changes made in the fake devices file, as the kubelet sees them."""

from __future__ import annotations

import pytest

from krakenplug.testing import AdmissionError

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/fake"
WAIT = 30.0


@pytest.fixture
def running(kubelet, start_agent):
    agent = start_agent()
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    return agent


def test_unhealthy_then_healthy_again(kubelet, node, running):
    node.devices.set_health("fake-1", "Unhealthy")
    state = kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=3, timeout=WAIT)
    assert state.devices["fake-1"].health == "Unhealthy"

    node.devices.set_health("fake-2", "Unhealthy")
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=2, timeout=WAIT)

    node.devices.set_health("fake-1", "Healthy")
    node.devices.set_health("fake-2", "Healthy")
    state = kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    assert {view.health for view in state.devices.values()} == {"Healthy"}


def test_a_pod_keeps_its_device_when_it_turns_unhealthy(kubelet, node, running):
    kubelet.allocate(RESOURCE, 1, pod="trainer-0", ids=["fake-0"])

    node.devices.set_health("fake-0", "Unhealthy")
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=3, timeout=WAIT)

    assert [a.device_ids for a in kubelet.allocations()] == [("fake-0",)]
    response = kubelet.allocate(RESOURCE, 3, pod="trainer-1")  # the other three are still there
    assert sorted(kubelet.allocations()[1].device_ids) == ["fake-1", "fake-2", "fake-3"]
    assert len(response.container_responses) == 1


def test_a_removed_device_lowers_capacity(kubelet, node, running):
    node.devices.remove("fake-3")

    state = kubelet.wait_for_resource(RESOURCE, capacity=3, allocatable=3, timeout=WAIT)

    assert sorted(state.devices) == ["fake-0", "fake-1", "fake-2"]


def test_allocate_of_an_unhealthy_device_fails_naming_it(kubelet, node, running):
    node.devices.set_health("fake-2", "Unhealthy")
    kubelet.wait_for_resource(RESOURCE, allocatable=3, timeout=WAIT)

    with pytest.raises(AdmissionError) as caught:
        kubelet.allocate(RESOURCE, pod="trainer-0", ids=["fake-2"])

    assert caught.value.method == "Allocate"
    assert caught.value.code is not None
    assert "fake-2" in caught.value.details
    assert kubelet.allocations() == []


def test_allocate_of_an_unknown_device_fails_naming_it(kubelet, running):
    with pytest.raises(AdmissionError) as caught:
        kubelet.allocate(RESOURCE, pod="trainer-0", ids=["fake-0", "ghost-9"])

    assert caught.value.method == "Allocate"
    assert "ghost-9" in caught.value.details
    assert kubelet.allocations() == []

"""Several resources from per-model rules, and time-slicing replicas."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

WAIT = 30.0
BIG, SMALL = "example.com/kraken-80g", "example.com/kraken-40g"


def test_per_model_rules_register_two_resources(kubelet, node, start_agent):
    data = node.devices.load()
    for device in data["devices"][2:]:
        device["model"] = "KrakenSim-40G"
        device["memory_mb"] = 40960
    node.devices.write(data)

    start_agent(config={"backends": {"fake": {"resources": [
        {"name": BIG, "models": ["*-80G"]}, {"name": SMALL, "models": ["krakensim-40g"]}]}}})

    kubelet.wait_for(lambda r: r[BIG].allocatable == 2 and r[SMALL].allocatable == 2, timeout=WAIT,
                     what="two resources with two devices each")
    states = kubelet.resources()
    assert sorted(states) == [SMALL, BIG]
    assert sorted(states[BIG].devices) == ["fake-0", "fake-1"]
    assert sorted(states[SMALL].devices) == ["fake-2", "fake-3"]
    assert states[BIG].endpoint != states[SMALL].endpoint

    kubelet.allocate(BIG, 1, pod="big")
    kubelet.allocate(SMALL, 2, pod="small")
    assert {a.resource: len(a.device_ids) for a in kubelet.allocations()} == {BIG: 1, SMALL: 2}


def test_replicas_multiply_capacity(kubelet, start_agent):
    start_agent("--replicas", "4")

    state = kubelet.wait_for_resource("krakenplug.pcl.ac.cn/fake", capacity=16, allocatable=16, timeout=WAIT)

    assert len(set(state.devices)) == 16
    numa_per_device = {view.numa_nodes for view in state.devices.values()}
    assert numa_per_device == {(0,), (1,)}  # replicas keep their physical device's NUMA node
    response = kubelet.allocate("krakenplug.pcl.ac.cn/fake", 1, pod="shared-0")
    assert len(response.container_responses) == 1

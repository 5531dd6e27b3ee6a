"""The plugin with the project's kubelet simulator: admission through GetPreferredAllocation and Allocate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from krakenplug.backends import fake
from krakenplug.testing.kubelet import KubeletSimulator

from .conftest import fake_backend, fake_devices, write_devices

RESOURCE = fake.DEFAULT_RESOURCE


@pytest.fixture
def simulator(short_tmp) -> Iterator[KubeletSimulator]:
    with KubeletSimulator(short_tmp) as kubelet:
        yield kubelet


def test_pods_are_admitted_onto_one_numa_node(simulator, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file))
    simulator.wait_for_resource(RESOURCE, capacity=4, allocatable=4)
    simulator.allocate(RESOURCE, 2, pod="trainer")
    chosen = simulator.allocations()[0].device_numa
    assert len({nodes for _, nodes in chosen}) == 1
    assert "GetPreferredAllocation" in simulator.calls and "Allocate" in simulator.calls


def test_health_changes_move_allocatable_and_survive_a_kubelet_restart(simulator, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file), replicas=2)
    simulator.wait_for_resource(RESOURCE, capacity=8, allocatable=8)
    sick = fake_devices(4)
    sick[0]["health"] = "Unhealthy"
    write_devices(devices_file, sick)
    simulator.wait_for_resource(RESOURCE, capacity=8, allocatable=6)
    registrations = len(simulator.registrations)
    simulator.restart()
    simulator.wait_for_resource(RESOURCE, capacity=8, allocatable=6)
    assert len(simulator.registrations) == registrations + 1
    response = simulator.allocate(RESOURCE, 1, pod="after-restart")
    assert response.container_responses[0].envs["KRAKENPLUG_VISIBLE_DEVICES"] != "fake-0"

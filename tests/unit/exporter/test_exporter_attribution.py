"""Pod attribution rules: NUMA de-duplication, replicas, foreign resources, unambiguous owners."""

from __future__ import annotations

import pytest
from exporter_helpers import RESOURCE, container, pod, response

from krakenplug import replica_ids
from krakenplug.backends import base
from krakenplug.exporter import attribution
from krakenplug.exporter.attribution import Allocation, DeviceUsers


def _device(device_id: str, index: int, resource: str = RESOURCE) -> base.Device:
    return base.Device(id=device_id, index=index, vendor="fake", model="M", memory_total_mb=1, resource=resource)


DEVICES = [_device("fake-0", 0), _device("fake-1", 1), _device("fake-2", 2)]


def test_flatten_counts_a_device_listed_once_per_numa_node_once():
    answer = response(pod("p", "ns", container("c", (RESOURCE, ["fake-0"], [0]), (RESOURCE, ["fake-0"], [1]),
                                               (RESOURCE, ["fake-1"], [1]))))
    assert attribution.flatten(answer) == (
        Allocation("ns", "p", "c", RESOURCE, "fake-0"),
        Allocation("ns", "p", "c", RESOURCE, "fake-1"),
    )


def test_flatten_of_an_empty_answer_is_empty():
    assert attribution.flatten(response()) == ()
    assert attribution.flatten(response(pod("p", "ns", container("c")))) == ()


@pytest.mark.parametrize(("device_id", "expected"), [
    ("fake-0", "fake-0"),
    ("fake-0::3", "fake-0"),
    ("fake-0::12", "fake-0"),
    ("fake-9::1", None),
    ("fake-0::", None),
    ("fake-0::x", None),
    ("fake-0:1", None),
    ("", None),
], ids=["plain", "replica", "replica-two-digits", "unknown-device", "empty-suffix", "bad-suffix",
        "single-colon", "empty"])
def test_physical_id(device_id, expected):
    assert replica_ids.physical_id(device_id, {"fake-0", "fake-1"}) == expected  # the codec attribution uses


def test_assign_maps_replicas_to_their_device_and_merges_them():
    allocations = [
        Allocation("ns", "a", "main", RESOURCE, "fake-0::0"),
        Allocation("ns", "a", "main", RESOURCE, "fake-0::1"),
        Allocation("ns", "b", "main", RESOURCE, "fake-0::2"),
    ]
    users = attribution.assign(allocations, DEVICES)
    assert users == {"fake-0": DeviceUsers((("ns", "a", "main", RESOURCE), ("ns", "b", "main", RESOURCE)))}


def test_assign_ignores_other_plugins_and_unknown_ids():
    allocations = [
        Allocation("ns", "a", "main", "nvidia.com/gpu", "fake-0"),  # same ID, someone else's resource
        Allocation("ns", "a", "main", RESOURCE, "fake-7"),  # an ID we do not have (any more)
        Allocation("ns", "a", "main", "example.com/fpga", "0"),
        Allocation("ns", "b", "main", RESOURCE, "fake-2"),
    ]
    assert attribution.assign(allocations, DEVICES) == {"fake-2": DeviceUsers((("ns", "b", "main", RESOURCE),))}


@pytest.mark.parametrize(("users", "owner"), [
    ([("ns", "a", "main", RESOURCE)], ("a", "ns", "main")),
    ([("ns", "a", "main", RESOURCE), ("ns", "a", "side", RESOURCE)], ("a", "ns", "")),
    ([("ns", "a", "main", RESOURCE), ("ns", "b", "main", RESOURCE)], ("", "", "")),
    ([("ns1", "a", "main", RESOURCE), ("ns2", "a", "main", RESOURCE)], ("", "", "")),
], ids=["one-container", "two-containers-one-pod", "two-pods", "same-name-two-namespaces"])
def test_owner_is_named_only_when_unambiguous(users, owner):
    assert DeviceUsers(tuple(sorted(users))).owner() == owner

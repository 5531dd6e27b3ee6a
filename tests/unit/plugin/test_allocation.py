from __future__ import annotations

import pytest

from krakenplug.plugin import allocation

from .helpers import device, inventory_of

INVENTORY = inventory_of(device("a"), device("b"), device("sick", healthy=False, reason="XID 79"))
SHARED = inventory_of(device("a"), device("b"), replicas=4)


@pytest.mark.parametrize(("inventory", "requests", "limits", "expected"), [
    (INVENTORY, [["a"]], allocation.Limits(), [["a"]]),
    (INVENTORY, [["b", "a"]], allocation.Limits(), [["b", "a"]]),
    (INVENTORY, [["a"], ["b"]], allocation.Limits(), [["a"], ["b"]]),
    (SHARED, [["a::0", "a::3", "b::1"]], allocation.Limits(replicas=4), [["a", "b"]]),
    (SHARED, [["a::0"], ["a::1"]], allocation.Limits(replicas=4), [["a"], ["a"]]),
    (SHARED, [["a::2"]], allocation.Limits(replicas=4, fail_requests_greater_than_one=True), [["a"]]),
    (SHARED, [["a::0", "a::1"]], allocation.Limits(replicas=4, max_devices_per_container=1), [["a"]]),
], ids=["one-device", "order-kept", "two-containers", "replicas-map-to-distinct-physical-devices",
        "two-containers-share-a-device", "one-replica-with-the-limit", "limit-counts-physical-devices"])
def test_valid_requests_resolve_to_physical_devices(inventory, requests, limits, expected):
    resolved = allocation.resolve_request(inventory, requests, limits=limits)
    assert [[d.id for d in devices] for devices in resolved] == expected


@pytest.mark.parametrize(("inventory", "requests", "limits", "error", "message"), [
    (INVENTORY, [], allocation.Limits(), allocation.InvalidRequest, "container_requests is empty"),
    (INVENTORY, [[]], allocation.Limits(), allocation.InvalidRequest, "container_requests[0].devices_ids is empty"),
    (INVENTORY, [["a"], []], allocation.Limits(), allocation.InvalidRequest, "container_requests[1].devices_ids"),
    (INVENTORY, [["a", "nope"]], allocation.Limits(), allocation.InvalidRequest, "unknown device ID 'nope'"),
    (INVENTORY, [["a", "a"]], allocation.Limits(), allocation.InvalidRequest, "duplicate device ID 'a'"),
    (INVENTORY, [["a"], ["a"]], allocation.Limits(), allocation.InvalidRequest,
     "also requested by container_requests[0]"),
    (INVENTORY, [["sick"]], allocation.Limits(), allocation.DeviceNotUsable, "'sick' is unhealthy (XID 79)"),
    (SHARED, [["a"]], allocation.Limits(replicas=4), allocation.InvalidRequest, "unknown device ID 'a'"),
    (SHARED, [["a::0", "b::0"]], allocation.Limits(replicas=4, fail_requests_greater_than_one=True),
     allocation.InvalidRequest, "a container may ask for 1"),
    (SHARED, [["a::0", "b::0"]], allocation.Limits(replicas=4, max_devices_per_container=1),
     allocation.InvalidRequest, "at most 1"),
    (INVENTORY, [["x" * 5000]], allocation.Limits(), allocation.InvalidRequest, "(5000 characters)"),
], ids=["no-containers", "empty-ids", "second-container-empty", "unknown-id", "duplicate-id",
        "same-id-in-two-containers", "unhealthy-device", "physical-id-when-replicas-are-advertised",
        "shared-request-above-one", "backend-limit", "huge-id-is-cut-short"])
def test_bad_requests_are_refused_naming_the_problem(inventory, requests, limits, error, message):
    with pytest.raises(error) as raised:
        allocation.resolve_request(inventory, requests, limits=limits)
    assert message in str(raised.value)
    assert len(str(raised.value)) < 400


def test_unhealthy_replica_is_refused_like_its_device():
    inventory = inventory_of(device("a", healthy=False), replicas=2)
    with pytest.raises(allocation.DeviceNotUsable, match="'a::1' is unhealthy"):
        allocation.resolve_request(inventory, [["a::1"]], limits=allocation.Limits(replicas=2))

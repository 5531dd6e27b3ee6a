from __future__ import annotations

import pytest

from krakenplug.plugin import allocation, preferred

from .helpers import device, inventory_of, numa_layout


def _choose(inventory, available, must, size):
    slots = preferred.validate(inventory, available, must, size, where="container_requests[0]")
    return preferred.choose(*slots, size)


LAYOUT = inventory_of(*numa_layout({0: 2, 1: 3, None: 1}))


@pytest.mark.parametrize(("available", "must", "size", "expected"), [
    (list(LAYOUT.slots), [], 2, ["d1-0", "d1-1"]),
    (list(LAYOUT.slots), [], 3, ["d1-0", "d1-1", "d1-2"]),
    (list(LAYOUT.slots), [], 4, ["d1-0", "d1-1", "d1-2", "d0-0"]),
    (list(LAYOUT.slots), ["d0-1"], 2, ["d0-1", "d0-0"]),
    (list(LAYOUT.slots), ["d0-1"], 3, ["d0-1", "d0-0", "d1-0"]),
    (list(LAYOUT.slots), ["dx-0", "d1-2"], 3, ["dx-0", "d1-2", "d1-0"]),
    (["d0-0", "d0-1", "d1-0", "dx-0"], [], 2, ["d0-0", "d0-1"]),
    (["d0-0", "d1-0", "dx-0"], [], 3, ["d0-0", "d1-0", "dx-0"]),
    (["d0-1"], ["d0-1"], 1, ["d0-1"]),
    (list(LAYOUT.slots), [], 0, []),
], ids=["fits-in-the-fullest-node", "fills-the-fullest-node", "spills-to-the-next-node", "follows-must-include-node",
        "must-include-node-first-then-fullest", "no-topology-must-include-then-its-node", "ties-go-to-lower-node",
        "devices-without-numa-last", "only-must-include", "zero-size"])
def test_preferred_allocation_packs_onto_few_numa_nodes(available, must, size, expected):
    assert _choose(LAYOUT, available, must, size) == expected


def test_unhealthy_devices_come_last():
    inventory = inventory_of(*numa_layout({0: 3}, unhealthy=("d0-0",)))
    assert _choose(inventory, ["d0-0", "d0-1", "d0-2"], [], 2) == ["d0-1", "d0-2"]
    assert _choose(inventory, ["d0-0", "d0-1", "d0-2"], [], 3)[-1] == "d0-0"


SHARED = inventory_of(*numa_layout({0: 2, 1: 2}), replicas=3)


@pytest.mark.parametrize(("available", "must", "size", "expected"), [
    (list(SHARED.slots), [], 2, ["d0-0::0", "d0-1::0"]),
    (list(SHARED.slots), [], 3, ["d0-0::0", "d0-1::0", "d0-0::1"]),
    (list(SHARED.slots), ["d1-1::2"], 2, ["d1-1::2", "d1-0::0"]),
    ([s for s in SHARED.slots if s.startswith("d0") and s != "d0-0::0"], [], 1, ["d0-1::0"]),
    ([s for s in SHARED.slots if s.startswith("d0") and s != "d0-0::0"], [], 3, ["d0-1::0", "d0-0::1", "d0-1::1"]),
    ([s for s in SHARED.slots if s not in ("d0-0::0", "d0-1::0")], [], 2, ["d1-0::0", "d1-1::0"]),
], ids=["distinct-devices-first", "second-replica-only-when-needed", "must-include-device-counts-as-used",
        "least-loaded-device-first", "then-round-robin", "node-with-more-free-ids-wins"])
def test_replicas_prefer_distinct_and_least_loaded_devices(available, must, size, expected):
    assert _choose(SHARED, available, must, size) == expected


@pytest.mark.parametrize(("available", "must", "size", "message"), [
    (["d0-0"], [], -1, "allocation_size: must not be negative (got -1)"),
    (["d0-0"], [], 2, "allocation_size: 2 is more than the 1 available_deviceIDs"),
    (["d0-0", "ghost"], [], 1, "available_deviceIDs: unknown device ID 'ghost'"),
    (["d0-0"], ["ghost"], 1, "must_include_deviceIDs: unknown device ID 'ghost'"),
    (["d0-0"], ["d1-0"], 1, "'d1-0' is not in available_deviceIDs"),
    (["d0-0", "d1-0"], ["d0-0", "d1-0"], 1, "2 must_include_deviceIDs but allocation_size is 1"),
    (["d0-0", "d0-0"], [], 2, "2 is more than the 1 available_deviceIDs"),
], ids=["negative-size", "size-above-available", "unknown-available", "unknown-must-include",
        "must-include-not-available", "must-include-above-size", "duplicates-count-once"])
def test_bad_preferred_allocation_requests_are_refused(available, must, size, message):
    with pytest.raises(allocation.InvalidRequest) as raised:
        preferred.validate(LAYOUT, available, must, size, where="container_requests[0]")
    assert message in str(raised.value)


class _Picky:
    """A backend with its own preference (the SupportsPreferredAllocation capability)."""

    def __init__(self, answer):
        self.answer = answer
        self.seen = None

    def preferred_allocation(self, available, must_include, size):
        self.seen = ([d.id for d in available], [d.id for d in must_include], size)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_backend_preference_is_used_when_it_is_valid():
    inventory = inventory_of(device("a"), device("b"), device("c"))
    backend = _Picky(["c", "a"])
    slots = preferred.validate(inventory, ["a", "b", "c"], ["a"], 2, where="r")
    assert preferred.from_backend(backend, inventory, *slots, 2) == ["c", "a"]
    assert backend.seen == (["a", "b", "c"], ["a"], 2)


@pytest.mark.parametrize("answer", [["b"], ["b", "c"], ["a", "zzz"], ["a", "a"], RuntimeError("boom")],
                         ids=["too-few", "must-include-missing", "unknown-id", "duplicate", "raises"])
def test_unusable_backend_preference_falls_back_to_the_generic_policy(answer, caplog):
    inventory = inventory_of(device("a"), device("b"), device("c"))
    slots = preferred.validate(inventory, ["a", "b", "c"], ["a"], 2, where="r")
    assert preferred.from_backend(_Picky(answer), inventory, *slots, 2) is None
    assert "generic policy" in caplog.text


def test_backend_without_the_capability_gets_the_generic_policy():
    from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
    from krakenplug.plugin import allocation, feed, servicer

    inventory = inventory_of(device("a", numa=1), device("b", numa=0), device("c", numa=0))
    plugin = servicer.DevicePluginServicer(feed.SnapshotFeed(inventory), object(), limits=allocation.Limits())
    request = dp_pb2.PreferredAllocationRequest(container_requests=[dp_pb2.ContainerPreferredAllocationRequest(
        available_deviceIDs=["a", "b", "c"], allocation_size=2)])
    assert list(plugin.GetPreferredAllocation(request, None).container_responses[0].deviceIDs) == ["b", "c"]

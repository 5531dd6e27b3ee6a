from __future__ import annotations

import pytest

from krakenplug.plugin import replicas

from .helpers import device, inventory_of


@pytest.mark.parametrize(("device_id", "count", "expected"), [
    ("gpu-0", 1, ["gpu-0"]),
    ("gpu-0", 3, ["gpu-0::0", "gpu-0::1", "gpu-0::2"]),
    ("x" * 63, 1, ["x" * 63]),
], ids=["no-replicas-keeps-the-id", "replicas-get-a-suffix", "63-characters-is-allowed"])
def test_replica_ids(device_id, count, expected):
    assert replicas.replica_ids(device_id, count) == expected


@pytest.mark.parametrize(("device_id", "count"), [
    ("x" * 64, 1), ("GPU-" + "a" * 60, 2), ("ü" * 70, 1000),
], ids=["64-characters", "suffix-pushes-it-over", "unicode-and-four-digit-replica"])
def test_too_long_ids_are_shortened_stably_and_stay_unique(device_id, count):
    ids = replicas.replica_ids(device_id, count)
    assert all(len(advertised) <= replicas.MAX_ID_LENGTH for advertised in ids)
    assert len(set(ids)) == count
    assert ids == replicas.replica_ids(device_id, count)  # a restarted plugin advertises the same IDs
    assert ids[0].startswith(device_id[:20])
    assert replicas.replica_ids(device_id + "-other", count) != ids


def test_slots_map_every_replica_to_its_physical_device():
    first, second = device("a", numa=0), device("b", numa=1, healthy=False)
    slots = replicas.build_slots([first, second], replicas=2)
    assert {k: (s.device.id, s.replica, s.healthy) for k, s in slots.items()} == {
        "a::0": ("a", 0, True), "a::1": ("a", 1, True), "b::0": ("b", 0, False), "b::1": ("b", 1, False)}


def test_a_device_clashing_on_an_advertised_id_is_left_out(caplog):
    slots = replicas.build_slots([device("a"), device("a", numa=1)], replicas=1)
    assert list(slots) == ["a"] and slots["a"].device.numa_node == 0
    assert "clashes" in caplog.text


def test_list_and_watch_response_carries_health_and_topology():
    response = inventory_of(device("a", numa=3), device("b", numa=None, healthy=False)).response
    assert [(d.ID, d.health, [n.ID for n in d.topology.nodes], d.HasField("topology")) for d in response.devices] == [
        ("a", "Healthy", [3], True), ("b", "Unhealthy", [], False)]


def test_physical_devices_are_deduplicated_in_first_seen_order():
    inventory = inventory_of(device("a"), device("b"), replicas=3)
    slots = [inventory.slots[i] for i in ("b::2", "a::0", "b::0", "a::1")]
    assert [d.id for d in replicas.physical_devices(slots)] == ["b", "a"]


def test_advertised_view_ignores_what_the_kubelet_cannot_see():
    assert inventory_of(device("a", reason="")).advertised == inventory_of(device("a", reason="x")).advertised
    assert inventory_of(device("a")).advertised != inventory_of(device("a", healthy=False)).advertised
    assert inventory_of(device("a")).advertised != inventory_of(device("a", numa=1)).advertised

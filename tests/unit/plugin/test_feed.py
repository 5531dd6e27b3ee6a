from __future__ import annotations

import threading

from krakenplug.plugin import feed

from .helpers import device, inventory_of


def test_version_moves_only_when_the_kubelet_would_see_a_difference():
    snapshots = feed.SnapshotFeed(inventory_of(device("a")))
    assert snapshots.publish(inventory_of(device("a", reason="only the reason"))) is False
    assert snapshots.current()[0] == 0
    assert snapshots.inventory.devices[0].health_reason == "only the reason"
    assert snapshots.publish(inventory_of(device("a", healthy=False))) is True
    assert snapshots.current()[0] == 1


def test_waiting_streams_get_the_next_snapshot_or_end_when_closed():
    snapshots = feed.SnapshotFeed(inventory_of(device("a")))
    results = []
    waiter = threading.Thread(target=lambda: results.append(snapshots.wait_newer(0, active=lambda: True)))
    waiter.start()
    snapshots.publish(inventory_of(device("a"), device("b")))
    waiter.join(timeout=10)
    version, newest = results[0]
    assert version == 1 and [d.id for d in newest.devices] == ["a", "b"]
    closer = threading.Thread(target=lambda: results.append(snapshots.wait_newer(1, active=lambda: True)))
    closer.start()
    snapshots.close()
    closer.join(timeout=10)
    assert results[1] is None


def test_a_stream_whose_client_left_ends():
    snapshots = feed.SnapshotFeed(inventory_of(device("a")))
    assert snapshots.wait_newer(0, active=lambda: False) is None

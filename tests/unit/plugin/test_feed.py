from __future__ import annotations

import asyncio
import threading

import pytest

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
    """Streams wait on an event loop; publish and close come from other threads, as in the agent."""
    snapshots = feed.SnapshotFeed(inventory_of(device("a")))

    async def scenario():
        waiting = asyncio.ensure_future(snapshots.next_after(0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        publisher = threading.Thread(target=snapshots.publish, args=(inventory_of(device("a"), device("b")),))
        publisher.start()
        version, newest = await asyncio.wait_for(waiting, 10)
        publisher.join()
        assert version == 1 and [d.id for d in newest.devices] == ["a", "b"]
        closing = asyncio.ensure_future(snapshots.next_after(1))
        await asyncio.sleep(0.05)
        threading.Thread(target=snapshots.close).start()
        assert await asyncio.wait_for(closing, 10) is None

    asyncio.run(scenario())


def test_a_cancelled_stream_stops_waiting_and_leaves_no_waiter_behind():
    snapshots = feed.SnapshotFeed(inventory_of(device("a")))

    async def scenario():
        waiting = asyncio.ensure_future(snapshots.next_after(0))
        await asyncio.sleep(0.05)
        assert len(snapshots._waiters) == 1
        waiting.cancel()  # what gRPC does when the kubelet goes away
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not snapshots._waiters

    asyncio.run(scenario())


def test_a_snapshot_published_before_the_wait_is_returned_at_once():
    snapshots = feed.SnapshotFeed(inventory_of(device("a")))
    snapshots.publish(inventory_of(device("a", healthy=False)))
    version, _ = asyncio.run(asyncio.wait_for(snapshots.next_after(0), 10))
    assert version == 1

"""The health stream's bound: streams beyond the limit are refused, so workers stay free for Prepare."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest

from krakenplug.api import drahealth_v1alpha1_pb2 as health_pb2
from krakenplug.backends import base
from krakenplug.dra.service import HealthServicer


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise _Aborted(details)


class _Snapshot:
    def __init__(self, version: int, devices: tuple[base.Device, ...] = ()) -> None:
        self.version, self.devices = version, devices


class _Hub:
    """The hub's two calls the health streams use: subscribe, snapshot."""

    def __init__(self) -> None:
        self.current = _Snapshot(1)
        self.subscribers: list[Any] = []

    def snapshot(self) -> _Snapshot:
        return self.current

    def subscribe(self, callback: Any) -> Any:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def publish(self, snapshot: _Snapshot) -> None:  # from another thread, as the hub's reader does
        self.current = snapshot
        for callback in list(self.subscribers):
            callback(snapshot)


def _device(health: base.Health) -> base.Device:
    return base.Device(id="d0", index=0, vendor="fake", model="m", memory_total_mb=1, resource="r", health=health,
                       health_reason="" if health is base.Health.HEALTHY else "xid 79")


def test_streams_beyond_the_limit_are_refused_until_one_closes() -> None:
    hub: Any = _Hub()
    servicer = HealthServicer(hub, pool="node-1", name_of=lambda device: device.id, timeout_seconds=60, max_streams=2)
    request = health_pb2.NodeWatchResourcesRequest()

    async def scenario() -> None:
        open_streams = [servicer.NodeWatchResources(request, _Context()) for _ in range(2)]
        for stream in open_streams:
            assert isinstance(await anext(stream), health_pb2.NodeWatchResourcesResponse)
        refused = _Context()
        with pytest.raises(_Aborted, match="2 NodeWatchResources streams are open already"):
            await anext(servicer.NodeWatchResources(request, refused))
        assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        await open_streams[0].aclose()  # the client went away: its slot is free again
        assert isinstance(await anext(servicer.NodeWatchResources(request, _Context())),
                          health_pb2.NodeWatchResourcesResponse)

    asyncio.run(scenario())


def test_a_snapshot_from_another_thread_wakes_the_stream_and_close_ends_it() -> None:
    hub: Any = _Hub()
    hub.current = _Snapshot(1, (_device(base.Health.HEALTHY),))
    servicer = HealthServicer(hub, pool="node-1", name_of=lambda device: device.id, timeout_seconds=3600)

    async def scenario() -> None:
        stream = servicer.NodeWatchResources(health_pb2.NodeWatchResourcesRequest(), _Context())
        first = await anext(stream)
        assert first.devices[0].health == health_pb2.HEALTHY
        threading.Thread(target=hub.publish, args=(_Snapshot(2, (_device(base.Health.UNHEALTHY),)),)).start()
        second = await asyncio.wait_for(anext(stream), 10)  # long before the hour's resend
        assert second.devices[0].health == health_pb2.UNHEALTHY and second.devices[0].message == "xid 79"
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)
        threading.Thread(target=servicer.close).start()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 10)
        assert not hub.subscribers  # the stream unsubscribed from the hub

    asyncio.run(scenario())

"""The health stream's bound: streams beyond the limit are refused, so workers stay free for Prepare."""

from __future__ import annotations

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

    def is_active(self) -> bool:
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise _Aborted(details)


class _Snapshot:
    version = 1
    devices: tuple[base.Device, ...] = ()


class _Hub:
    def wait_for_change(self, after_version: int, timeout: float) -> _Snapshot:
        return _Snapshot()


def test_streams_beyond_the_limit_are_refused_until_one_closes() -> None:
    hub: Any = _Hub()
    servicer = HealthServicer(hub, pool="node-1", name_of=lambda device: device.id, timeout_seconds=60,
                              stop=threading.Event(), max_streams=2)
    request = health_pb2.NodeWatchResourcesRequest()
    open_streams = [servicer.NodeWatchResources(request, _Context()) for _ in range(2)]
    for stream in open_streams:
        assert isinstance(next(stream), health_pb2.NodeWatchResourcesResponse)
    refused = _Context()
    with pytest.raises(_Aborted, match="2 NodeWatchResources streams are open already"):
        next(servicer.NodeWatchResources(request, refused))
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    open_streams[0].close()  # the client went away: its slot is free again
    assert isinstance(next(servicer.NodeWatchResources(request, _Context())), health_pb2.NodeWatchResourcesResponse)

"""The kubelet's client side of one registered plugin: dial back, options, ListAndWatch, allocation RPCs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.testing.errors import PluginCallError
from krakenplug.testing.state import DeviceView

logger = logging.getLogger(__name__)

DIAL_TIMEOUT_SECONDS = 10.0  # the kubelet's blocking dial back to the plugin socket
PRE_START_TIMEOUT_SECONDS = 30.0

DevicesCallback = Callable[["PluginEndpoint", dict[str, DeviceView]], None]
EndCallback = Callable[["PluginEndpoint", str], None]


def endpoint_socket(directory: Path, endpoint: str) -> Path:
    """Go's filepath.Join(dir, endpoint): an absolute endpoint is joined under the directory too."""
    return Path(directory, *[part for part in endpoint.split("/") if part])


class PluginEndpoint:
    """One connection to ``<dir>/<endpoint>``; every call is recorded through ``record``."""

    def __init__(self, resource: str, endpoint: str, socket_path: Path, *,
                 record: Callable[[str], None], call_timeout: float | None) -> None:
        self.resource = resource
        self.endpoint = endpoint
        self.socket_path = socket_path
        self._record = record
        self._call_timeout = call_timeout
        # A private subchannel pool: a restarted plugin on the same path must get a fresh connection.
        self._channel = grpc.insecure_channel(f"unix://{socket_path}", options=[("grpc.use_local_subchannel_pool", 1)])
        self._stub = dp_grpc.DevicePluginStub(self._channel)
        self._stream: Any = None  # the ListAndWatch call: a cancellable iterator of responses
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def dial(self, *, timeout: float = DIAL_TIMEOUT_SECONDS) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise PluginCallError("Dial", grpc.StatusCode.UNAVAILABLE,
                                  f"failed to dial device plugin: {self.socket_path} not reachable "
                                  f"within {timeout:g}s") from None

    def get_options(self, *, timeout: float | None) -> dp_pb2.DevicePluginOptions:
        options: dp_pb2.DevicePluginOptions = self._unary("GetDevicePluginOptions", dp_pb2.Empty(), timeout=timeout)
        return options

    def preferred_allocation(self, available: Sequence[str], must_include: Sequence[str],
                             size: int) -> list[str]:
        request = dp_pb2.PreferredAllocationRequest(container_requests=[dp_pb2.ContainerPreferredAllocationRequest(
            available_deviceIDs=list(available), must_include_deviceIDs=list(must_include), allocation_size=size)])
        response = self._unary("GetPreferredAllocation", request, timeout=self._call_timeout)
        # The kubelet reads only the first container response.
        return list(response.container_responses[0].deviceIDs) if response.container_responses else []

    def allocate(self, device_ids: Sequence[str]) -> dp_pb2.AllocateResponse:
        request = dp_pb2.AllocateRequest(container_requests=[dp_pb2.ContainerAllocateRequest(
            devices_ids=list(device_ids))])
        response: dp_pb2.AllocateResponse = self._unary("Allocate", request, timeout=self._call_timeout)
        return response

    def pre_start(self, device_ids: Sequence[str]) -> None:
        request = dp_pb2.PreStartContainerRequest(devices_ids=list(device_ids))
        self._unary("PreStartContainer", request, timeout=PRE_START_TIMEOUT_SECONDS)

    def watch(self, on_devices: DevicesCallback, on_end: EndCallback) -> None:
        """Opens ListAndWatch once, in a background thread; it is never reopened (a new Register is)."""
        self._thread = threading.Thread(target=self._run_watch, args=(on_devices, on_end),
                                        name=f"listandwatch-{self.resource}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Ends the stream (the plugin sees its ListAndWatch cancelled) and the connection."""
        self._closed.set()
        if self._stream is not None:
            self._stream.cancel()
        self._channel.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run_watch(self, on_devices: DevicesCallback, on_end: EndCallback) -> None:
        self._record("ListAndWatch")
        reason = "stream ended by the plugin"
        try:
            self._stream = self._stub.ListAndWatch(dp_pb2.Empty())
            if self._closed.is_set():
                self._stream.cancel()
            for message in self._stream:
                on_devices(self, device_views(message))
        except grpc.RpcError as err:
            reason = str(PluginCallError.from_rpc_error("ListAndWatch", err))
        except ValueError as err:  # the channel was closed under us by close()
            reason = f"connection closed: {err}"
        if not self._closed.is_set():
            logger.info("listandwatch for %s ended: %s", self.resource, reason)
        on_end(self, reason)

    def _unary(self, method: str, request: Any, *, timeout: float | None) -> Any:
        self._record(method)
        try:
            return getattr(self._stub, method)(request, timeout=timeout)
        except grpc.RpcError as err:
            raise PluginCallError.from_rpc_error(method, err) from None
        except ValueError as err:  # closed channel
            raise PluginCallError(method, grpc.StatusCode.UNAVAILABLE, str(err)) from None


def device_views(message: dp_pb2.ListAndWatchResponse) -> dict[str, DeviceView]:
    """A full snapshot; a duplicated ID collapses to its last entry, as in the kubelet."""
    views: dict[str, DeviceView] = {}
    for device in message.devices:
        views[device.ID] = DeviceView(health=device.health,
                                      numa_nodes=tuple(node.ID for node in device.topology.nodes))
    return views

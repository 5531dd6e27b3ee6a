"""The kubelet's DevicePlugin service for one resource: the RPC handlers, nothing about lifecycles.

Handlers never let an exception escape as a bare UNKNOWN: bad requests become INVALID_ARGUMENT or
FAILED_PRECONDITION with a message naming the field and the ID, backend failures UNAVAILABLE or
INTERNAL. This is the gRPC boundary, so it is the one place that also catches unexpected errors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from krakenplug import errors
from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.backends import base
from krakenplug.plugin import allocation, preferred
from krakenplug.plugin import feed as feed_mod
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

OPTIONS = dp_pb2.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

_STATUS = (
    (allocation.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (allocation.DeviceNotUsable, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.KrakenplugError, grpc.StatusCode.INTERNAL),
)


class DevicePluginServicer(dp_grpc.DevicePluginServicer):
    def __init__(self, feed: feed_mod.SnapshotFeed, backend: base.Backend, *, limits: allocation.Limits,
                 cdi_prefix: str | None = None, max_streams: int = 4) -> None:
        self._feed = feed
        self._backend = backend
        self._limits = limits
        self._cdi_prefix = cdi_prefix
        self._max_streams = max_streams
        # Checked once: a runtime_checkable isinstance costs tens of microseconds, more than the call itself.
        self._chooser = backend if limits.replicas == 1 and isinstance(backend, base.SupportsPreferredAllocation) \
            else None
        self._streams = threading.BoundedSemaphore(max_streams)
        self._refusals = TransitionLog(logger)

    @property
    def resource(self) -> str:
        return self._feed.inventory.resource

    def GetDevicePluginOptions(self, request: dp_pb2.Empty,
                               context: grpc.ServicerContext) -> dp_pb2.DevicePluginOptions:
        return OPTIONS

    async def ListAndWatch(self, request: dp_pb2.Empty,
                           context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[dp_pb2.ListAndWatchResponse]:
        # A stream waits on the gRPC loop, not on a worker; the bound only stops a client that opens
        # streams in a loop from piling them up.
        if not self._streams.acquire(blocking=False):
            # Once per flood, not once per refused stream: a client opening streams in a loop must not fill the log.
            self._refusals.report("streams", "full", logging.WARNING, "refusing ListAndWatch streams for %s: "
                                  "%d are open already", self.resource, self._max_streams)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{self._max_streams} ListAndWatch streams for {self.resource} are open already "
                                f"(the kubelet needs one); close one first")
        self._refusals.clear("streams")
        try:
            version, inventory = self._feed.current()
            if logger.isEnabledFor(logging.INFO):  # the summary walks every device: only build it when shown
                logger.info("kubelet opened ListAndWatch for %s: %s", self.resource, inventory.summary())
            yield inventory.response
            while (newer := await self._feed.next_after(version)) is not None:
                version, inventory = newer
                logger.debug("sending a new %s snapshot (version %d)", self.resource, version)
                yield inventory.response
        finally:
            self._streams.release()
            logger.debug("ListAndWatch stream for %s ended", self.resource)

    def GetPreferredAllocation(self, request: dp_pb2.PreferredAllocationRequest,
                               context: grpc.ServicerContext) -> dp_pb2.PreferredAllocationResponse:
        with _StatusFromErrors(context, "GetPreferredAllocation", self._feed):
            if not request.container_requests:
                raise allocation.InvalidRequest(f"{self.resource}: container_requests is empty")
            inventory = self._feed.inventory
            response = dp_pb2.PreferredAllocationResponse()
            for position, wanted in enumerate(request.container_requests):
                where = f"container_requests[{position}]"
                available, must_include = preferred.validate(
                    inventory, wanted.available_deviceIDs, wanted.must_include_deviceIDs,
                    wanted.allocation_size, where=where)
                size = wanted.allocation_size
                ids = None
                if self._chooser is not None:
                    ids = preferred.from_backend(self._chooser, inventory, available, must_include, size)
                if ids is None:
                    ids = preferred.choose(available, must_include, size)
                response.container_responses.add(deviceIDs=ids)
            return response

    def Allocate(self, request: dp_pb2.AllocateRequest, context: grpc.ServicerContext) -> dp_pb2.AllocateResponse:
        with _StatusFromErrors(context, "Allocate", self._feed):
            inventory = self._feed.inventory
            wanted = [container.devices_ids for container in request.container_requests]
            per_container = allocation.resolve_request(inventory, wanted, limits=self._limits)
            response = dp_pb2.AllocateResponse()
            for devices in per_container:
                granted = self._backend.allocate(devices)
                response.container_responses.append(self._container_response(devices, granted))
            if logger.isEnabledFor(logging.INFO):  # the join would cost more than the check on every call
                for ids in wanted:
                    logger.info("allocated %s of %s", ", ".join(ids), inventory.resource)
            return response

    def PreStartContainer(self, request: dp_pb2.PreStartContainerRequest,
                          context: grpc.ServicerContext) -> dp_pb2.PreStartContainerResponse:
        return dp_pb2.PreStartContainerResponse()

    def _container_response(self, devices: Sequence[base.Device],
                            granted: base.ContainerAllocation) -> dp_pb2.ContainerAllocateResponse:
        response = dp_pb2.ContainerAllocateResponse(envs=granted.envs, annotations=granted.annotations)
        for node in granted.device_nodes:
            response.devices.add(container_path=node.container_path, host_path=node.host_path,
                                 permissions=node.permissions)
        for mount in granted.mounts:
            response.mounts.add(container_path=mount.container_path, host_path=mount.host_path,
                                read_only=mount.read_only)
        if self._cdi_prefix:
            for device in devices:
                response.cdi_devices.add(name=f"{self._cdi_prefix}/{device.vendor}={device.id}")
        return response


class _StatusFromErrors:
    """Turns an exception inside an RPC handler into a gRPC status (a class: cheaper per call than a generator)."""

    __slots__ = ("_context", "_method", "_feed")

    def __init__(self, context: grpc.ServicerContext, method: str, feed: feed_mod.SnapshotFeed) -> None:
        self._context, self._method, self._feed = context, method, feed

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, _traceback: Any) -> None:
        if err is None or not isinstance(err, Exception):
            return
        resource = self._feed.inventory.resource
        if isinstance(err, errors.KrakenplugError):
            code = next(code for kind_, code in _STATUS if isinstance(err, kind_))
            logger.warning("%s for %s refused (%s): %s", self._method, resource, code.name, err)
            self._context.abort(code, str(err))
        logger.error("%s for %s failed unexpectedly", self._method, resource, exc_info=err)
        self._context.abort(grpc.StatusCode.INTERNAL,
                            f"{self._method} for {resource} failed: {type(err).__name__}: {err}")

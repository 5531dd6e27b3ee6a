"""The gRPC services the kubelet calls: Registration, DRAPlugin v1 (and v1beta1), DRAResourceHealth v1alpha1.

Errors of one claim go into that claim's response (the kubelet retries just that claim); only a request
that cannot be read at all fails the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc

from krakenplug.api import dra_v1_pb2 as dra_pb2
from krakenplug.api import dra_v1_pb2_grpc as dra_grpc
from krakenplug.api import dra_v1beta1_pb2 as dra_beta_pb2
from krakenplug.api import dra_v1beta1_pb2_grpc as dra_beta_grpc
from krakenplug.api import drahealth_v1alpha1_pb2 as health_pb2
from krakenplug.api import drahealth_v1alpha1_pb2_grpc as health_grpc
from krakenplug.api import pluginregistration_v1_pb2 as reg_pb2
from krakenplug.api import pluginregistration_v1_pb2_grpc as reg_grpc
from krakenplug.backends import base
from krakenplug.dra.claims import ClaimError
from krakenplug.dra.prepare import ClaimRef, Preparer
from krakenplug.grpc_unix import Wakeups
from krakenplug.hub import DeviceHub, Snapshot

logger = logging.getLogger(__name__)

PLUGIN_TYPE = "DRAPlugin"
SUPPORTED_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")  # newest first, as the kubelet expects
# The kubelet keeps one health stream (two across a reconnect).
MAX_HEALTH_STREAMS = 4


class RegistrationServicer(reg_grpc.RegistrationServicer):
    """Tells the kubelet's plugin watcher who we are; remembers its verdict."""

    def __init__(self, driver: str, endpoint: str, *, on_registered: Callable[[], None] = lambda: None) -> None:
        self.info = reg_pb2.PluginInfo(type=PLUGIN_TYPE, name=driver, endpoint=endpoint,
                                       supported_versions=list(SUPPORTED_VERSIONS))
        self.registered = threading.Event()
        self.error = ""
        self._on_registered = on_registered

    def GetInfo(self, request: reg_pb2.InfoRequest, context: grpc.ServicerContext) -> reg_pb2.PluginInfo:
        return self.info

    def NotifyRegistrationStatus(self, request: reg_pb2.RegistrationStatus,
                                 context: grpc.ServicerContext) -> reg_pb2.RegistrationStatusResponse:
        if request.plugin_registered:
            self.error = ""
            self.registered.set()
            logger.info("kubelet registered DRA driver %s (endpoint %s)", self.info.name, self.info.endpoint)
            self._on_registered()
        else:
            self.error = request.error or "no reason given"
            self.registered.clear()
            logger.error("kubelet refused DRA driver %s: %s", self.info.name, self.error)
        return reg_pb2.RegistrationStatusResponse()


class DraServicer(dra_grpc.DRAPluginServicer):
    """NodePrepareResources / NodeUnprepareResources, one claim at a time, errors per claim."""

    def __init__(self, preparer: Preparer) -> None:
        self._preparer = preparer

    def NodePrepareResources(self, request: dra_pb2.NodePrepareResourcesRequest,
                             context: grpc.ServicerContext) -> dra_pb2.NodePrepareResourcesResponse:
        response = dra_pb2.NodePrepareResourcesResponse()
        for ref, entry in _each_claim(request.claims, response.claims):
            try:
                prepared = self._preparer.prepare(ref)
            except ClaimError as err:
                logger.warning("NodePrepareResources: %s", err)
                entry.error = str(err)
                continue
            except Exception as err:  # noqa: BLE001 - one claim's surprise must not fail the batch
                logger.exception("NodePrepareResources: claim %s failed unexpectedly", ref)
                entry.error = f"claim {ref}: internal error: {err}"
                continue
            for device in prepared.devices:
                out = entry.devices.add(request_names=list(device.request_names), pool_name=device.pool,
                                        device_name=device.device, cdi_device_ids=list(device.cdi_ids))
                if device.share_id:
                    out.share_id = device.share_id
        return response

    def NodeUnprepareResources(self, request: dra_pb2.NodeUnprepareResourcesRequest,
                               context: grpc.ServicerContext) -> dra_pb2.NodeUnprepareResourcesResponse:
        response = dra_pb2.NodeUnprepareResourcesResponse()
        for ref, entry in _each_claim(request.claims, response.claims):
            try:
                self._preparer.unprepare(ref)
            except ClaimError as err:
                logger.warning("NodeUnprepareResources: %s", err)
                entry.error = str(err)
        return response


def _each_claim(claims: Iterable[dra_pb2.Claim], entries: Any) -> Iterator[tuple[ClaimRef, Any]]:
    """(claim reference, its entry in the response, keyed by UID) for every claim of a request."""
    for claim in claims:
        yield ClaimRef(namespace=claim.namespace, uid=claim.uid, name=claim.name), entries[claim.uid]


class DraBetaServicer(dra_beta_grpc.DRAPluginServicer):
    """v1beta1 has the v1 messages field for field (without share_id): translate through the wire format."""

    def __init__(self, current: DraServicer) -> None:
        self._current = current

    def NodePrepareResources(self, request: dra_beta_pb2.NodePrepareResourcesRequest,
                             context: grpc.ServicerContext) -> dra_beta_pb2.NodePrepareResourcesResponse:
        answer = self._current.NodePrepareResources(
            dra_pb2.NodePrepareResourcesRequest.FromString(request.SerializeToString()), context)
        for entry in answer.claims.values():
            for device in entry.devices:
                device.ClearField("share_id")
        translated: dra_beta_pb2.NodePrepareResourcesResponse = dra_beta_pb2.NodePrepareResourcesResponse.FromString(
            answer.SerializeToString())
        return translated

    def NodeUnprepareResources(self, request: dra_beta_pb2.NodeUnprepareResourcesRequest,
                               context: grpc.ServicerContext) -> dra_beta_pb2.NodeUnprepareResourcesResponse:
        answer = self._current.NodeUnprepareResources(
            dra_pb2.NodeUnprepareResourcesRequest.FromString(request.SerializeToString()), context)
        translated: dra_beta_pb2.NodeUnprepareResourcesResponse = \
            dra_beta_pb2.NodeUnprepareResourcesResponse.FromString(answer.SerializeToString())
        return translated


def health_response(devices: Sequence[base.Device], *, pool: str, name_of: Callable[[base.Device], str],
                    timeout_seconds: int, now: float) -> health_pb2.NodeWatchResourcesResponse:
    response = health_pb2.NodeWatchResourcesResponse()
    for device in devices:
        response.devices.add(
            device=health_pb2.DeviceIdentifier(pool_name=pool, device_name=name_of(device)),
            health=health_pb2.HEALTHY if device.healthy else health_pb2.UNHEALTHY,
            last_updated_time=int(now), health_check_timeout_seconds=timeout_seconds,
            message=device.health_reason if not device.healthy else "")
    return response


class HealthServicer(health_grpc.DRAResourceHealthServicer):
    """Streams every device's health at once, on every snapshot change, and again well within the timeout.

    The streams wait on the gRPC event loop (krakenplug.grpc_unix), woken by the hub's snapshots.
    """

    def __init__(self, hub: DeviceHub, *, pool: str, name_of: Callable[[base.Device], str], timeout_seconds: int,
                 on_sent: Callable[[Snapshot], None] = lambda snapshot: None,
                 devices_of: Callable[[Sequence[base.Device]], Sequence[base.Device]] = lambda devices: devices,
                 max_streams: int = MAX_HEALTH_STREAMS) -> None:
        """``devices_of`` turns a snapshot's devices into the published ones (whole partitionable devices)."""
        self._hub = hub
        self._devices_of = devices_of
        self._pool = pool
        self._name_of = name_of
        self._timeout = timeout_seconds
        self._on_sent = on_sent
        self._max_streams = max_streams
        self._streams = threading.BoundedSemaphore(max_streams)
        self._closed = False
        self._waiters = Wakeups()
        self._unsubscribe = hub.subscribe(lambda snapshot: self._waiters.wake())  # on the hub's thread

    def close(self) -> None:
        """Ends every stream (the driver is stopping)."""
        self._closed = True
        self._unsubscribe()
        self._waiters.wake()

    async def NodeWatchResources(self, request: health_pb2.NodeWatchResourcesRequest,
                                 context: Any) -> AsyncIterator[health_pb2.NodeWatchResourcesResponse]:
        # A client that opens streams and never closes them gets a bounded number.
        if not self._streams.acquire(blocking=False):
            logger.warning("refused a NodeWatchResources stream: %d are open already", self._max_streams)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self._max_streams} NodeWatchResources "
                                "streams are open already (the kubelet needs one); close one first")
        try:
            async for response in self._watch():
                yield response
        finally:
            self._streams.release()

    async def _watch(self) -> AsyncIterator[health_pb2.NodeWatchResourcesResponse]:
        resend = self._timeout / 3  # well within the kubelet's timeout, so no device turns Unknown
        with self._waiters.waiting() as changed:
            while not self._closed:
                changed.clear()  # before reading: a snapshot after this read wakes the wait below
                snapshot = self._hub.snapshot()
                yield health_response(self._devices_of(snapshot.devices), pool=self._pool, name_of=self._name_of,
                                      timeout_seconds=self._timeout, now=time.time())
                self._on_sent(snapshot)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), resend)

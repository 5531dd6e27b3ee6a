"""The kubelet's PodResources API v1 (``List``): which containers hold which devices.

One client for every component that asks (the exporter's pod attribution, the SR-IOV component's
"is this PF in use" check): one persistent channel over the unix socket, a deadline on every call, and
one error type that says whether the kubelet rate-limited us (token bucket: 100 calls/s, burst 10).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import NamedTuple

import grpc

from krakenplug import errors
from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc

__all__ = ["DEFAULT_SOCKET", "Allocation", "PodResourcesClient", "PodResourcesError", "flatten"]

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
CALL_TIMEOUT_SECONDS = 5.0
CHANNEL_OPTIONS = [
    # The kubelet recreates the socket when it restarts; reconnect soon rather than after gRPC's 2 min cap.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class Allocation(NamedTuple):
    """One device ID handed to one container, as the kubelet reports it (a tuple: cheap to sort and hash).

    A device allocated by a DRA driver (``dynamic_resources``) has the driver's name as ``resource`` and
    ``<pool>/<device>`` as ``device_id``: the names it has in the driver's ResourceSlice.
    """

    namespace: str
    pod: str
    container: str
    resource: str
    device_id: str


class PodResourcesError(errors.KrakenplugError):
    """``List`` could not be answered; ``rate_limited`` when the kubelet said RESOURCE_EXHAUSTED."""

    def __init__(self, message: str, *, rate_limited: bool = False) -> None:
        super().__init__(message)
        self.rate_limited = rate_limited


def flatten(response: pr_pb2.ListPodResourcesResponse) -> tuple[Allocation, ...]:
    """Every distinct (container, resource, device ID) in a ``List`` answer, DRA devices included, sorted.

    The kubelet flattens a container's devices into one entry per (device ID, NUMA node), so the same
    pair can appear several times; it is counted once.
    """
    found: set[Allocation] = set()
    for pod in response.pod_resources:
        namespace, pod_name = pod.namespace, pod.name
        for container in pod.containers:
            container_name = container.name
            for devices in container.devices:
                resource = devices.resource_name
                found.update(Allocation(namespace, pod_name, container_name, resource, device_id)
                             for device_id in devices.device_ids)
            for claim in container.dynamic_resources:
                found.update(Allocation(namespace, pod_name, container_name, claimed.driver_name,
                                        f"{claimed.pool_name}/{claimed.device_name}")
                             for claimed in claim.claim_resources)
    return tuple(sorted(found))


class PodResourcesClient:
    """``List`` over one channel to ``socket_path``, opened on first use; thread-safe."""

    def __init__(self, socket_path: Path | str, *, call_timeout_seconds: float = CALL_TIMEOUT_SECONDS) -> None:
        self.socket_path = Path(socket_path)
        self.call_timeout_seconds = call_timeout_seconds
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: pr_grpc.PodResourcesListerStub | None = None

    def list(self) -> tuple[Allocation, ...]:
        """Every allocation the kubelet reports; PodResourcesError naming the socket when it cannot."""
        if not os.path.exists(self.socket_path):
            raise PodResourcesError(f"kubelet PodResources socket {self.socket_path} does not exist")
        try:
            reply = self._lister().List(pr_pb2.ListPodResourcesRequest(), timeout=self.call_timeout_seconds)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            details = err.details() if hasattr(err, "details") else str(err)
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise PodResourcesError(f"rate-limited by the kubelet: {details}", rate_limited=True) from err
            name = code.name if code is not None else "UNKNOWN"
            raise PodResourcesError(f"List on {self.socket_path} failed: {name}: {details}") from err
        return flatten(reply)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = self._stub = None

    def _lister(self) -> pr_grpc.PodResourcesListerStub:
        with self._lock:
            if self._stub is None:
                self._channel = grpc.insecure_channel(f"unix:{self.socket_path.absolute()}", options=CHANNEL_OPTIONS)
                self._stub = pr_grpc.PodResourcesListerStub(self._channel)
            return self._stub

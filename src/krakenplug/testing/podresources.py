"""A PodResources API server on a unix socket, answering from the simulated kubelet's allocations.

It serves ``v1.PodResourcesLister`` (List, GetAllocatableResources, Get) and, on the same socket, the
older ``v1alpha1.PodResourcesLister/List``, like the kubelet. Devices are flattened the kubelet's way:
one ContainerDevices per (device ID, NUMA node). Devices prepared by a DRA driver (``claims``) are
listed in ``dynamic_resources``, one DynamicResource per claim, as with KubeletPodResourcesDynamicResources. Unary calls are rate limited (100 QPS, burst 10 by
default) and refused with RESOURCE_EXHAUSTED "rejected by rate limit" beyond that.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc
from krakenplug.testing.state import Allocation, DeviceView, flatten

logger = logging.getLogger(__name__)

DEFAULT_RATE_LIMIT = (100.0, 10)  # the kubelet's QPS and burst for this API
RATE_LIMIT_MESSAGE = "rejected by rate limit"

AllocationsSource = Callable[[], list[Allocation]]


@dataclasses.dataclass(frozen=True)
class ClaimAllocation:
    """One device of a ResourceClaim that a container uses (by driver, pool and device name)."""

    pod: str
    namespace: str
    container: str
    claim_name: str
    driver: str
    pool: str
    device: str
    share_id: str | None = None


ClaimsSource = Callable[[], list[ClaimAllocation]]
DevicesSource = Callable[[], Mapping[str, Mapping[str, DeviceView]]]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``allow()`` takes one if there is one."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate limit needs rate > 0 and burst >= 1, got rate={rate!r} burst={burst!r}")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


def container_devices(allocations: Iterable[Allocation]) -> list[pr_pb2.ContainerDevices]:
    return [_entry(resource, device_id, node)
            for allocation in allocations
            for resource, device_id, node in flatten(allocation.resource, allocation.device_numa)]


def allocatable_devices(devices: Mapping[str, Mapping[str, DeviceView]]) -> list[pr_pb2.ContainerDevices]:
    """Healthy devices of every resource; allocated ones included, as the kubelet reports them."""
    return [_entry(resource, device_id, node)
            for resource, views in devices.items()
            for resource, device_id, node in flatten(
                resource, [(device_id, view.numa_nodes) for device_id, view in views.items() if view.healthy])]


def pod_resources(allocations: Iterable[Allocation],
                  claims: Iterable[ClaimAllocation] = ()) -> list[pr_pb2.PodResources]:
    """Pods in the order they were admitted, containers in the order they got devices."""
    pods: dict[tuple[str, str], dict[str, list[Allocation | ClaimAllocation]]] = {}
    held: list[Allocation | ClaimAllocation] = [*allocations, *claims]
    for allocation in held:
        containers = pods.setdefault((allocation.namespace, allocation.pod), {})
        containers.setdefault(allocation.container, []).append(allocation)
    return [pr_pb2.PodResources(name=name, namespace=namespace, containers=[
        pr_pb2.ContainerResources(
            name=container,
            devices=container_devices(held for held in used if isinstance(held, Allocation)),
            dynamic_resources=dynamic_resources(held for held in used if isinstance(held, ClaimAllocation)))
        for container, used in containers.items()]) for (namespace, name), containers in pods.items()]


def dynamic_resources(claims: Iterable[ClaimAllocation]) -> list[pr_pb2.DynamicResource]:
    """One DynamicResource per claim, its devices as ClaimResources (no CDI devices: not needed here)."""
    by_claim: dict[tuple[str, str], list[pr_pb2.ClaimResource]] = {}
    for claim in claims:
        by_claim.setdefault((claim.namespace, claim.claim_name), []).append(pr_pb2.ClaimResource(
            driver_name=claim.driver, pool_name=claim.pool, device_name=claim.device, share_id=claim.share_id))
    return [pr_pb2.DynamicResource(claim_name=name, claim_namespace=namespace, claim_resources=resources)
            for (namespace, name), resources in by_claim.items()]


def _entry(resource: str, device_id: str, node: int | None) -> pr_pb2.ContainerDevices:
    entry = pr_pb2.ContainerDevices(resource_name=resource, device_ids=[device_id])
    if node is not None:
        entry.topology.nodes.add(ID=node)
    return entry


class _Lister(pr_grpc.PodResourcesListerServicer):
    def __init__(self, allocations: AllocationsSource, devices: DevicesSource,
                 limiter: TokenBucket | None, claims: ClaimsSource) -> None:
        self._allocations = allocations
        self._devices = devices
        self._limiter = limiter
        self._claims = claims

    def List(self, request: Any, context: grpc.ServicerContext) -> pr_pb2.ListPodResourcesResponse:
        self._admit(context)
        return pr_pb2.ListPodResourcesResponse(pod_resources=pod_resources(self._allocations(), self._claims()))

    def GetAllocatableResources(self, request: pr_pb2.AllocatableResourcesRequest,
                                context: grpc.ServicerContext) -> pr_pb2.AllocatableResourcesResponse:
        self._admit(context)
        return pr_pb2.AllocatableResourcesResponse(devices=allocatable_devices(self._devices()))

    def Get(self, request: pr_pb2.GetPodResourcesRequest,
            context: grpc.ServicerContext) -> pr_pb2.GetPodResourcesResponse:
        self._admit(context)
        wanted = [allocation for allocation in self._allocations()
                  if (allocation.pod, allocation.namespace) == (request.pod_name, request.pod_namespace)]
        if not wanted:
            context.abort(grpc.StatusCode.UNKNOWN,
                          f"pod {request.pod_name} in namespace {request.pod_namespace} not found")
        return pr_pb2.GetPodResourcesResponse(pod_resources=pod_resources(wanted)[0])

    def ListV1Alpha1(self, request: Any, context: grpc.ServicerContext) -> pr_pb2.ListPodResourcesResponse:
        # v1alpha1 has the same field numbers without topology; strip it so old clients see their shape.
        response = self.List(request, context)
        for pod in response.pod_resources:
            for container in pod.containers:
                container.ClearField("dynamic_resources")
                for device in container.devices:
                    device.ClearField("topology")
        return response

    def _admit(self, context: grpc.ServicerContext) -> None:
        if self._limiter is not None and not self._limiter.allow():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, RATE_LIMIT_MESSAGE)


class PodResourcesServer:
    """Serves the API on ``socket_path`` until ``stop()``; ``rate_limit=None`` turns the limit off."""

    def __init__(self, socket_path: Path, *, allocations: AllocationsSource, devices: DevicesSource,
                 rate_limit: tuple[float, int] | None = DEFAULT_RATE_LIMIT, claims: ClaimsSource = list) -> None:
        self.socket_path = Path(socket_path)
        limiter = TokenBucket(*rate_limit) if rate_limit else None
        self._lister = _Lister(allocations, devices, limiter, claims)
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None

    def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self._executor = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="podresources")
        server = grpc.server(self._executor)
        pr_grpc.add_PodResourcesListerServicer_to_server(self._lister, server)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("v1alpha1.PodResourcesLister", {
            "List": grpc.unary_unary_rpc_method_handler(
                self._lister.ListV1Alpha1,
                request_deserializer=pr_pb2.ListPodResourcesRequest.FromString,
                response_serializer=pr_pb2.ListPodResourcesResponse.SerializeToString),
        })])
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server
        logger.debug("podresources serving on %s", self.socket_path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._server = None
            self.socket_path.unlink(missing_ok=True)

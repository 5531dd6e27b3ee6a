"""Helpers for the exporter tests: fake device files, kubelet PodResources answers and server.

The PodResources server is a real gRPC server on a unix socket implementing the kubelet's v1
``PodResourcesLister`` from the generated stubs; a test sets the answer (or a gRPC error) it returns.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import yaml

from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc
from krakenplug.backends import base
from krakenplug.backends.fake import FakeBackend, FakeOptions
from krakenplug.hub import DeviceHub

RESOURCE = "krakenplug.pcl.ac.cn/fake"


def write_devices(path: Path, count: int = 4, *, faults: dict[str, Any] | None = None,
                  **overrides: Any) -> Path:
    """Writes a fake devices file atomically (new inode, so the backend always notices)."""
    devices = []
    for index in range(count):
        device = {"id": f"fake-{index}", "model": "KrakenSim-80G", "memory_mb": 81920, "numa_node": index % 2,
                  "utilization": float(10 * index % 101), "memory_used_mb": float(1024 * index),
                  "pci_bus_id": f"0000:{0x3b + index:02x}:00.0"}
        device.update(overrides.get(f"device{index}", {}))
        devices.append(device)
    data: dict[str, Any] = {"devices": devices}
    if faults:
        data["faults"] = faults
    scratch = path.with_suffix(".tmp")
    scratch.write_text(yaml.safe_dump(data))
    os.replace(scratch, path)
    return path


def fake_backend(devices_file: Path | None = None, cls: type[FakeBackend] = FakeBackend) -> FakeBackend:
    backend = cls(FakeOptions(devices_file=devices_file))
    backend.open()
    return backend


class VendorExtrasFake(FakeBackend):
    """The fake backend plus what vendor backends offer beyond it: memory the driver reserves (NVML v2) on
    device 0 only, and which library, API and data path it uses (``SupportsLibraryInfo``)."""

    library = base.LibraryInfo(library="/usr/lib/libkrakensim.so.2", api="krakensim v2", path="krakensim+sysfs",
                               reason="krakensimInit succeeded")

    def sample(self, device: base.Device) -> base.DeviceSample:
        sample = super().sample(device)
        return dataclasses.replace(sample, memory_reserved_mb=512.0) if device.index == 0 else sample

    def library_info(self) -> base.LibraryInfo:
        return self.library


def hub_for(backend: Any) -> DeviceHub:
    """A device hub over ``backend`` holding its first snapshot (the agent's hub would keep polling)."""
    hub = DeviceHub(backend)
    hub.refresh()
    return hub


def container(name: str, *entries: tuple[str, Sequence[str], Sequence[int]]) -> pr_pb2.ContainerResources:
    """A container as the kubelet reports it: one ContainerDevices per (resource, IDs, NUMA nodes)."""
    devices = []
    for resource, ids, numa in entries:
        topology = pr_pb2.TopologyInfo(nodes=[pr_pb2.NUMANode(ID=node) for node in numa]) if numa else None
        devices.append(pr_pb2.ContainerDevices(resource_name=resource, device_ids=list(ids), topology=topology))
    return pr_pb2.ContainerResources(name=name, devices=devices)


def pod(name: str, namespace: str, *containers: pr_pb2.ContainerResources) -> pr_pb2.PodResources:
    return pr_pb2.PodResources(name=name, namespace=namespace, containers=list(containers))


def response(*pods: pr_pb2.PodResources) -> pr_pb2.ListPodResourcesResponse:
    return pr_pb2.ListPodResourcesResponse(pod_resources=list(pods))


class FakeKubelet(pr_grpc.PodResourcesListerServicer):
    """Answers ``List`` with ``self.answer``, or aborts with ``self.error`` = (code, message)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.answer = response()
        self.error: tuple[grpc.StatusCode, str] | None = None
        self.delay_seconds = 0.0
        self.calls = 0
        self._server: grpc.Server | None = None

    def List(self, request: Any, context: grpc.ServicerContext) -> pr_pb2.ListPodResourcesResponse:
        self.calls += 1
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        if self.error is not None:
            context.abort(*self.error)
        return self.answer

    def start(self) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pr_grpc.add_PodResourcesListerServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None
        self.socket_path.unlink(missing_ok=True)

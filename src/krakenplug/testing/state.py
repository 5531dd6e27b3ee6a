"""What the simulated kubelet knows: resources and their devices, and the allocations it made.

These are plain snapshots handed to tests; changing one never changes the simulator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2

HEALTHY = "Healthy"


@dataclasses.dataclass(frozen=True)
class DeviceView:
    """One device as the kubelet sees it: the health string and the NUMA nodes from its topology."""

    health: str
    numa_nodes: tuple[int, ...] = ()

    @property
    def healthy(self) -> bool:
        # The kubelet compares against exactly "Healthy": any other string counts as unhealthy.
        return self.health == HEALTHY


@dataclasses.dataclass
class ResourceState:
    """One extended resource: the endpoint serving it and the latest ListAndWatch snapshot."""

    resource_name: str
    endpoint: str
    options: dp_pb2.DevicePluginOptions
    devices: dict[str, DeviceView] = dataclasses.field(default_factory=dict)
    connected: bool = False
    updates: int = 0

    @property
    def capacity(self) -> int:
        return len(self.devices)

    @property
    def allocatable(self) -> int:
        # Devices given to pods are not subtracted: that is the scheduler's job, as on a real node.
        return sum(1 for device in self.devices.values() if device.healthy)

    def copy(self) -> ResourceState:
        options = dp_pb2.DevicePluginOptions()
        options.CopyFrom(self.options)
        return dataclasses.replace(self, devices=dict(self.devices), options=options)

    def describe(self) -> str:
        devices = ", ".join(f"{device_id}:{view.health or '<empty>'}{_numa_suffix(view.numa_nodes)}"
                            for device_id, view in self.devices.items())
        return (f"{self.resource_name}: capacity={self.capacity} allocatable={self.allocatable} "
                f"connected={self.connected} updates={self.updates} endpoint={self.endpoint!r} "
                f"devices=[{devices}]")


@dataclasses.dataclass(frozen=True)
class Allocation:
    """Devices of one resource given to one container, as kept in the kubelet checkpoint."""

    pod: str
    namespace: str
    container: str
    resource: str
    pod_uid: str
    device_numa: tuple[tuple[str, tuple[int, ...]], ...]
    response: bytes = b""  # the serialized ContainerAllocateResponse

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(device_id for device_id, _ in self.device_numa)

    def container_response(self) -> dp_pb2.ContainerAllocateResponse:
        return dp_pb2.ContainerAllocateResponse.FromString(self.response)


def flatten(resource: str, device_numa: Iterable[tuple[str, tuple[int, ...]]]) -> Iterator[tuple[str, str, int | None]]:
    """(resource, device ID, NUMA node or None) per (device, NUMA node), as the kubelet reports them.

    A device on two NUMA nodes is reported twice; a device without topology once, with no node.
    """
    for device_id, numa_nodes in device_numa:
        if not numa_nodes:
            yield resource, device_id, None
        for node in numa_nodes:
            yield resource, device_id, node


def describe_all(resources: dict[str, ResourceState]) -> str:
    if not resources:
        return "no resource registered"
    return "\n".join(f"  {state.describe()}" for state in resources.values())


def _numa_suffix(nodes: tuple[int, ...]) -> str:
    return f"@numa{','.join(str(node) for node in nodes)}" if nodes else ""

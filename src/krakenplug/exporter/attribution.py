"""Which containers use which of our devices, from a kubelet PodResources ``List`` answer.

Pure functions, so the rules are easy to test and to read:

- The kubelet flattens a container's devices into one ``ContainerDevices`` entry per (device ID, NUMA
  node); the same (resource, ID) pair can therefore appear several times and is counted once.
- Time-slicing replicas are advertised as ``<id>::<k>`` (hashed past 63 characters); they belong to the
  physical device ``<id>`` (decoded by the shared codec, :mod:`krakenplug.replica_ids`).
- Only (resource, ID) pairs that name one of *our* devices count: other device plugins on the node
  (and IDs we no longer have) are ignored.
- A device our DRA driver allocated (PodResources ``dynamic_resources``) is named by (driver, pool,
  device) as in our ResourceSlice: the pool is the node and the device name the DNS label of its ID
  (:mod:`krakenplug.resource_names`). Its users get the device's own resource name, so the metrics look
  the same whichever allocation mode handed the device out.
- A device series names its pod only when exactly one pod uses the device, so ``sum()`` over device
  series never counts a shared device twice; every use is listed in the allocation info metric.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from krakenplug import replica_ids, resource_names
from krakenplug.backends import base
from krakenplug.kubelet_podresources import Allocation, flatten

__all__ = ["Allocation", "DeviceUsers", "PodAttribution", "assign", "flatten"]


@dataclasses.dataclass(frozen=True)
class PodAttribution:
    """What a scrape knows about pods: the allocations and how fresh they are."""

    allocations: tuple[Allocation, ...] = ()
    up: bool = False
    last_success_unix: float = 0.0  # 0: never
    error: str = ""


@dataclasses.dataclass(frozen=True)
class DeviceUsers:
    """Every (namespace, pod, container, resource) using one physical device, sorted."""

    users: tuple[tuple[str, str, str, str], ...]

    def owner(self) -> tuple[str, str, str]:
        """(pod, namespace, container) for the device series; a label is empty unless unambiguous."""
        pods = {(namespace, pod) for namespace, pod, _, _ in self.users}
        if len(pods) != 1:
            return "", "", ""
        namespace, pod = next(iter(pods))
        containers = {container for _, _, container, _ in self.users}
        return pod, namespace, containers.pop() if len(containers) == 1 else ""


def assign(allocations: Iterable[Allocation], devices: Sequence[base.Device], *, dra_driver: str = "",
           pool: str = "") -> dict[str, DeviceUsers]:
    """Maps our device IDs to their users; allocations naming other resources or IDs are dropped.

    ``dra_driver`` and ``pool`` name our DRA driver's devices (empty: DRA allocations are not ours).
    """
    resource_of = {device.id: device.resource for device in devices}
    decoder = replica_ids.Decoder(resource_of)
    claimed: dict[str, list[str]] = {}
    if dra_driver:  # a device by its DRA name; a whole partitionable device (DRA publishes it) is its partitions
        for device in devices:
            claimed[f"{pool}/{resource_names.dns_label(device.id)}"] = [device.id]
        for device in devices:
            if device.parent is not None and device.parent.id not in resource_of:
                claimed.setdefault(f"{pool}/{resource_names.dns_label(device.parent.id)}", []).append(device.id)
    users: dict[str, set[tuple[str, str, str, str]]] = {}
    for allocation in allocations:
        if dra_driver and allocation.resource == dra_driver:
            device_ids = claimed.get(allocation.device_id, [])
        else:
            device_id = decoder.physical_id(allocation.device_id)
            if device_id is None or resource_of[device_id] != allocation.resource:
                continue
            device_ids = [device_id]
        for device_id in device_ids:
            users.setdefault(device_id, set()).add(
                (allocation.namespace, allocation.pod, allocation.container, resource_of[device_id]))
    return {device_id: DeviceUsers(tuple(sorted(found))) for device_id, found in users.items()}

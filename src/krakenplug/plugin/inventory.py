"""The advertised view of one resource at one moment, built once per change and shared by every stream.

An :class:`Inventory` is immutable: the ListAndWatch response is serialised from the same message for
every connected kubelet stream, and Allocate looks IDs up in the inventory current at that instant.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.backends import base
from krakenplug.plugin import replicas as replicas_mod


@dataclasses.dataclass(frozen=True)
class Inventory:
    resource: str
    devices: tuple[base.Device, ...]
    slots: Mapping[str, replicas_mod.Slot]
    response: dp_pb2.ListAndWatchResponse

    @classmethod
    def build(cls, resource: str, devices: Iterable[base.Device], *, replicas: int) -> Inventory:
        devices = tuple(devices)
        slots = replicas_mod.build_slots(devices, replicas=replicas)
        return cls(resource, devices, slots, replicas_mod.list_and_watch_response(slots))

    @functools.cached_property
    def advertised(self) -> tuple[tuple[str, str, int | None], ...]:
        """What the kubelet sees (ID, health, NUMA node); a new snapshot is sent only when this changes."""
        return tuple((slot.id, slot.device.health.value, slot.device.numa_node) for slot in self.slots.values())

    @property
    def healthy_count(self) -> int:
        return sum(1 for slot in self.slots.values() if slot.healthy)

    def summary(self) -> str:
        unhealthy = [f"{d.id} ({d.health_reason or 'no reason given'})" for d in self.devices if not d.healthy]
        text = f"{len(self.devices)} devices, {len(self.slots)} IDs, {self.healthy_count} healthy IDs"
        return text + (f"; unhealthy: {', '.join(unhealthy)}" if unhealthy else "")


def group_by_resource(devices: Iterable[base.Device]) -> dict[str, list[base.Device]]:
    """Devices per resource name, keeping the backend's order inside each group."""
    groups: dict[str, list[base.Device]] = {}
    for device in devices:
        groups.setdefault(device.resource, []).append(device)
    return groups

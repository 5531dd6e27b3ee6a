"""Time-slicing: the schedulable IDs advertised for the physical devices of one resource.

With ``replicas: N`` above 1, every physical device is advertised N times as ``<id>::<k>`` (k = 0..N-1)
so N containers can share it; the kubelet only ever sees these IDs, and Allocate maps them back to the
physical device. With N = 1 the device ID is advertised as it is.

The encoding (``::k`` suffixes, 63-character limit, hashing) is the shared codec in
:mod:`krakenplug.replica_ids`, which the exporter and SR-IOV use to decode what pods hold.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.backends import base
from krakenplug.replica_ids import MAX_ID_LENGTH, SEPARATOR, fit_id, replica_ids

__all__ = ["MAX_ID_LENGTH", "SEPARATOR", "Slot", "build_slots", "fit_id", "list_and_watch_response",
           "physical_devices", "replica_ids"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One advertised, schedulable ID and the physical device behind it."""

    id: str
    device: base.Device
    replica: int | None = None

    @property
    def healthy(self) -> bool:
        # A replica is exactly as healthy as its device.
        return self.device.healthy


def build_slots(devices: Iterable[base.Device], *, replicas: int) -> dict[str, Slot]:
    """Advertised ID -> slot, in device order; a device whose ID is already taken is left out (logged)."""
    slots: dict[str, Slot] = {}
    for device in devices:
        ids = replica_ids(device.id, replicas)
        clash = next((advertised for advertised in ids if advertised in slots), None)
        if clash is not None:
            logger.error("device %r of %s clashes with device %r on advertised ID %r; leaving it out",
                         device.id, device.resource, slots[clash].device.id, clash)
            continue
        for k, advertised in enumerate(ids):
            slots[advertised] = Slot(advertised, device, k if replicas > 1 else None)
    return slots


def list_and_watch_response(slots: Mapping[str, Slot]) -> dp_pb2.ListAndWatchResponse:
    """The full snapshot the kubelet gets; topology is omitted for devices without a NUMA node."""
    response = dp_pb2.ListAndWatchResponse()
    for slot in slots.values():
        entry = response.devices.add(ID=slot.id, health=slot.device.health.value)
        if slot.device.numa_node is not None:
            entry.topology.nodes.add(ID=slot.device.numa_node)
    return response


def physical_devices(slots: Sequence[Slot]) -> list[base.Device]:
    """The distinct physical devices behind ``slots``, in first-seen order (what backend.allocate gets)."""
    seen: dict[str, base.Device] = {}
    for slot in slots:
        seen.setdefault(slot.device.id, slot.device)
    return list(seen.values())

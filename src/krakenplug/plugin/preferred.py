"""GetPreferredAllocation: which of the available IDs a container should get.

The policy, in order of importance:

1. every ``must_include`` ID is in the answer;
2. the rest is packed onto the fewest NUMA nodes: first the nodes the ``must_include`` devices are on,
   then the nodes with the most available IDs (ties: lower node number); devices without a NUMA node
   come last, and so do unhealthy ones;
3. within a node, with time-slicing, replicas of distinct physical devices come before a second replica
   of the same device, and among devices the least loaded (most replicas still available) comes first,
   so shared devices fill evenly.

A backend that implements ``SupportsPreferredAllocation`` decides instead when replicas are off (its
answer is checked; an unusable answer is logged and this policy is used).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator, Sequence

from krakenplug.backends import base
from krakenplug.plugin import allocation, replicas
from krakenplug.plugin import inventory as inventory_mod

logger = logging.getLogger(__name__)

_NO_NODE = None


def validate(inventory: inventory_mod.Inventory, available_ids: Sequence[str], must_include_ids: Sequence[str],
             size: int, *, where: str) -> tuple[list[replicas.Slot], list[replicas.Slot]]:
    """The available and must-include slots (duplicates dropped), or InvalidRequest naming the problem."""
    if size < 0:
        raise allocation.InvalidRequest(f"{where}.allocation_size: must not be negative (got {size})")
    available = _lookup(inventory, available_ids, where=f"{where}.available_deviceIDs")
    must_include = _lookup(inventory, must_include_ids, where=f"{where}.must_include_deviceIDs")
    offered = {slot.id for slot in available}
    for slot in must_include:
        if slot.id not in offered:
            raise allocation.InvalidRequest(f"{where}.must_include_deviceIDs: {allocation.show(slot.id)} "
                                            f"is not in available_deviceIDs")
    if len(must_include) > size:
        raise allocation.InvalidRequest(f"{where}: {len(must_include)} must_include_deviceIDs but "
                                        f"allocation_size is {size}")
    if size > len(available):
        raise allocation.InvalidRequest(f"{where}.allocation_size: {size} is more than the {len(available)} "
                                        f"available_deviceIDs")
    return available, must_include


def choose(available: Sequence[replicas.Slot], must_include: Sequence[replicas.Slot], size: int) -> list[str]:
    """``size`` IDs from ``available`` following the module's policy; inputs are already validated."""
    chosen = [slot.id for slot in must_include]
    taken = set(chosen)
    per_device = collections.Counter(slot.device.id for slot in must_include)
    candidates = [slot for slot in available if slot.id not in taken]
    for slot in _in_preference_order(candidates, must_include, per_device):
        if len(chosen) >= size:
            break
        chosen.append(slot.id)
    return chosen


def from_backend(backend: base.SupportsPreferredAllocation, inventory: inventory_mod.Inventory,
                 available: Sequence[replicas.Slot], must_include: Sequence[replicas.Slot], size: int) -> list[str] | None:
    """The backend's own choice mapped to advertised IDs, or None when it is unusable."""
    by_device = {slot.device.id: slot for slot in available}
    try:
        picked = backend.preferred_allocation([s.device for s in available], [s.device for s in must_include], size)
    except Exception as err:  # noqa: BLE001 - a backend's hint is optional: any failure falls back to the generic policy
        logger.warning("backend preferred allocation for %s failed, using the generic policy: %s",
                       inventory.resource, err)
        return None
    ids = [by_device[device_id].id for device_id in picked if device_id in by_device]
    if len(set(ids)) != size or len(ids) != len(picked) or not {s.id for s in must_include} <= set(ids):
        logger.warning("backend preferred allocation for %s returned an unusable answer %r (size %d); "
                       "using the generic policy", inventory.resource, list(picked)[:16], size)
        return None
    return ids


def _lookup(inventory: inventory_mod.Inventory, ids: Sequence[str], *, where: str) -> list[replicas.Slot]:
    slots: dict[str, replicas.Slot] = {}
    for device_id in ids:
        slot = inventory.slots.get(device_id)
        if slot is None:
            raise allocation.InvalidRequest(f"{where}: unknown device ID {allocation.show(device_id)} "
                                            f"for resource {inventory.resource}")
        slots.setdefault(device_id, slot)
    return list(slots.values())


def _in_preference_order(candidates: Sequence[replicas.Slot], must_include: Sequence[replicas.Slot],
                         per_device: collections.Counter[str]) -> Iterator[replicas.Slot]:
    healthy = [slot for slot in candidates if slot.healthy]
    unhealthy = [slot for slot in candidates if not slot.healthy]
    must_nodes = collections.Counter(slot.device.numa_node for slot in must_include)
    groups: dict[int | None, list[replicas.Slot]] = {}
    for slot in healthy:
        groups.setdefault(slot.device.numa_node, []).append(slot)

    def node_rank(node: int | None) -> tuple[int, int, int, int]:
        return (node is _NO_NODE, -must_nodes[node], -len(groups[node]), node if node is not None else 0)

    for node in sorted(groups, key=node_rank):
        yield from _spread_over_devices(groups[node], per_device)
    yield from _spread_over_devices(unhealthy, per_device)


def _spread_over_devices(slots: Sequence[replicas.Slot],
                         per_device: collections.Counter[str]) -> Iterator[replicas.Slot]:
    """Round-robin over physical devices: fewest already chosen first, then the least loaded device."""
    by_device: dict[str, list[replicas.Slot]] = {}
    for slot in slots:
        by_device.setdefault(slot.device.id, []).append(slot)
    if len(by_device) == len(slots) and not any(per_device[device_id] for device_id in by_device):
        yield from slots  # one slot per device, none chosen yet (no replicas): the order stays as it is
        return
    order = sorted(by_device, key=lambda device_id: -len(by_device[device_id]))  # stable: keeps backend order
    start = {device_id: per_device[device_id] for device_id in order}
    for level in range(max((start[d] + len(by_device[d]) for d in order), default=0)):
        for device_id in order:
            offset = level - start[device_id]
            if 0 <= offset < len(by_device[device_id]):
                yield by_device[device_id][offset]

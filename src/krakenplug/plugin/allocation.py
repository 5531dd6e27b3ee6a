"""Allocate-request validation: pure functions from requested IDs to physical devices.

Every container request of an AllocateRequest is checked before anything is handed to the backend, so
a bad request allocates nothing. Errors name the field and the offending ID; the servicer turns
:class:`InvalidRequest` into INVALID_ARGUMENT and :class:`DeviceNotUsable` into FAILED_PRECONDITION.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from krakenplug import errors
from krakenplug.backends import base
from krakenplug.plugin import inventory as inventory_mod
from krakenplug.plugin import replicas

_SHOWN_CHARACTERS = 80


class InvalidRequest(errors.AllocationError):
    """The request itself is malformed: empty, unknown or duplicate IDs, too many devices."""


class DeviceNotUsable(errors.AllocationError):
    """The request is well formed but names a device that cannot be handed out now (unhealthy)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-container rules that come from settings and from the backend."""

    replicas: int = 1
    fail_requests_greater_than_one: bool = False
    max_devices_per_container: int | None = None


def show(device_id: str) -> str:
    """An ID quoted for an error message, cut short so a huge or hostile ID cannot flood the logs."""
    if len(device_id) > _SHOWN_CHARACTERS:
        return repr(device_id[:_SHOWN_CHARACTERS]) + f"... ({len(device_id)} characters)"
    return repr(device_id)


def resolve_request(inventory: inventory_mod.Inventory, requests: Sequence[Sequence[str]], *,
                    limits: Limits) -> list[list[base.Device]]:
    """The physical devices of every container request, or an error for the first bad one."""
    if not requests:
        raise InvalidRequest(f"{inventory.resource}: container_requests is empty; expected one entry per container")
    claimed: dict[str, int] = {}
    resolved = []
    for position, ids in enumerate(requests):
        where = f"container_requests[{position}].devices_ids"
        slots = resolve_container(inventory, ids, where=where, limits=limits)
        for slot in slots:
            if slot.id in claimed:
                raise InvalidRequest(f"{where}: device ID {show(slot.id)} is also requested by "
                                     f"container_requests[{claimed[slot.id]}]")
            claimed[slot.id] = position
        resolved.append(replicas.physical_devices(slots))
    return resolved


def resolve_container(inventory: inventory_mod.Inventory, ids: Sequence[str], *, where: str,
                      limits: Limits) -> list[replicas.Slot]:
    """The slots behind one container's IDs; raises naming the first unknown, duplicate or unhealthy ID."""
    if not ids:
        raise InvalidRequest(f"{where} is empty; a container must ask for at least one {inventory.resource}")
    slots: list[replicas.Slot] = []
    seen: set[str] = set()
    for device_id in ids:
        slot = inventory.slots.get(device_id)
        if slot is None:
            raise InvalidRequest(f"{where}: unknown device ID {show(device_id)} for resource {inventory.resource}")
        if device_id in seen:
            raise InvalidRequest(f"{where}: duplicate device ID {show(device_id)}")
        seen.add(device_id)
        slots.append(slot)
    _check_limits(slots, where=where, limits=limits, resource=inventory.resource)
    for slot in slots:
        if not slot.healthy:
            reason = slot.device.health_reason or "no reason given"
            raise DeviceNotUsable(f"{where}: device {show(slot.id)} is unhealthy ({reason})")
    return slots


def _check_limits(slots: Sequence[replicas.Slot], *, where: str, limits: Limits, resource: str) -> None:
    if limits.replicas > 1 and limits.fail_requests_greater_than_one and len(slots) > 1:
        raise InvalidRequest(f"{where}: {len(slots)} IDs of shared resource {resource} requested; "
                             f"with replicas={limits.replicas} and fail_requests_greater_than_one a container "
                             f"may ask for 1")
    maximum = limits.max_devices_per_container
    physical = len({slot.device.id for slot in slots})
    if maximum is not None and physical > maximum:
        raise InvalidRequest(f"{where}: {physical} physical devices of {resource} requested; "
                             f"this backend gives a container at most {maximum}")

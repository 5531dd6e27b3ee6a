"""The ResourceSlices (resource.k8s.io/v1) that describe this node's devices: pure functions.

One vocabulary for every vendor: attributes under ``krakenplug.pcl.ac.cn/`` (vendor, model, uuid, index,
driverVersion, numaNode, and partition for a fixed partition such as a MIG instance) plus the standard ``resource.kubernetes.io/pciBusID`` and ``pcieRoot``, and the
capacity ``krakenplug.pcl.ac.cn/memory``. An Unhealthy device keeps its entry and gets a NoSchedule taint,
so the scheduler stops placing new claims on it while running ones stay. Limits are the API server's:
128 devices per slice (64 once a slice uses taints or multiple allocations), 32 attributes and capacities per device, string
values up to 64 characters.

Partitionable devices (KEP-4815, resource.k8s.io/v1 ``sharedCounters``): the partitions a backend reports
with a parent (MIG devices of a GPU, SR-IOV VFs of a PF) share one counter set per parent, published in a
slice of its own (v1 allows ``sharedCounters`` or ``devices`` in one slice, never both; at most 8 sets per
slice). Each partition consumes its share; the parent is published as a device of its own (allocating it
hands out all its partitions) that consumes every counter, so the whole device and its partitions are
never both allocated.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from krakenplug import resource_names as names
from krakenplug.backends import base

STANDARD = "resource.kubernetes.io"
UNHEALTHY_TAINT = f"{names.DOMAIN}/unhealthy"
MAX_DEVICES = 128
MAX_DEVICES_WITH_TAINTS = 64
MAX_ATTRIBUTES = 32
MAX_COUNTER_SETS = 8
MAX_STRING = 64
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")

Json = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Pool:
    """Every slice of one pool (our node) at one generation."""

    driver: str
    node: str
    generation: int
    slices: tuple[Json, ...]  # each a complete ResourceSlice spec

    def objects(self) -> list[Json]:
        return [{"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                 "metadata": {"name": names.slice_name(self.node, self.driver, index)}, "spec": spec}
                for index, spec in enumerate(self.slices)]


def semver(version: str | None) -> str | None:
    """A vendor driver version as semver (``535.104.05`` -> ``535.104.5``), or None when it is not numeric."""
    if not version:
        return None
    parts = re.findall(r"\d+", version.split("-")[0].split("+")[0])
    if not parts or not re.fullmatch(r"\d+(\.\d+)*", version.split("-")[0].split("+")[0]):
        return None
    numbers = [str(int(part)) for part in parts[:3]] + ["0"] * (3 - min(len(parts), 3))
    return ".".join(numbers)


def quantity_mb(megabytes: int) -> str:
    """``megabytes`` MiB as the API server writes it back (largest binary suffix that divides exactly)."""
    if megabytes == 0:
        return "0"
    for suffix, factor in (("Ti", 1 << 20), ("Gi", 1 << 10)):
        if megabytes % factor == 0:
            return f"{megabytes // factor}{suffix}"
    return f"{megabytes}Mi"


def _string(value: str) -> Json:
    return {"string": value[:MAX_STRING]}


def memory_capacity(memory_mb: int, share_step_mb: int) -> Json:
    """The ``memory`` capacity; with sharing, a request policy in steps of ``share_step_mb``.

    A claim that asks for no capacity takes the whole device (the policy's default), so sharing is
    something a claim asks for, never something that happens to it.
    """
    if share_step_mb <= 0 or memory_mb < share_step_mb:
        return {"value": quantity_mb(memory_mb)}
    usable = memory_mb - memory_mb % share_step_mb  # the default must lie on the step grid
    return {"value": quantity_mb(memory_mb),
            "requestPolicy": {"default": quantity_mb(usable),
                              "validRange": {"min": quantity_mb(share_step_mb), "max": quantity_mb(usable),
                                             "step": quantity_mb(share_step_mb)}}}


def device_entry(device: base.Device, *, driver_version: str | None, pcie_root: str | None,
                 share_step_mb: int = 0) -> Json:
    """One ``spec.devices[]`` entry."""
    ours = f"{names.DOMAIN}/"
    attributes: Json = {
        ours + "vendor": _string(device.vendor),
        ours + "model": _string(device.model),
        ours + "uuid": _string(device.uuid or device.id),
        ours + "index": {"int": device.index},
    }
    version = semver(driver_version)
    if version:
        attributes[ours + "driverVersion"] = {"version": version}
    elif driver_version:
        attributes[ours + "driverVersion"] = _string(driver_version)  # not semver: compared as a string
    if device.numa_node is not None:
        attributes[ours + "numaNode"] = {"int": device.numa_node}
    if device.partition:
        attributes[ours + "partition"] = _string(device.partition)  # a fixed partition (MIG instance), as published
    if device.pci_bus_id:
        attributes[f"{STANDARD}/pciBusID"] = _string(device.pci_bus_id.lower())
    if pcie_root:
        attributes[f"{STANDARD}/pcieRoot"] = _string(pcie_root)
    entry: Json = {"name": names.dns_label(device.id), "attributes": attributes,
                   "capacity": {ours + "memory": memory_capacity(device.memory_total_mb, share_step_mb)}}
    if "requestPolicy" in entry["capacity"][ours + "memory"]:
        entry["allowMultipleAllocations"] = True
    if not device.healthy:
        reason = _LABEL_VALUE.sub("-", device.health_reason or "unhealthy").strip("-._")[:63] or "unhealthy"
        entry["taints"] = [{"key": UNHEALTHY_TAINT, "value": reason, "effect": "NoSchedule"}]
    return entry


def counter_set_name(parent_id: str) -> str:
    """The counter set of one partitionable device, a DNS label."""
    return names.dns_label(f"{parent_id}-counters")


def _counters(pairs: Sequence[tuple[str, int]]) -> Json:
    """Counters as the API has them; memory (MB) as a binary quantity, the form the API server keeps."""
    return {name: {"value": quantity_mb(amount) if name == base.COUNTER_MEMORY_MB else str(amount)}
            for name, amount in pairs}


def whole_devices(devices: Sequence[base.Device]) -> list[base.Device]:
    """The physical devices whose partitions are in ``devices`` and which are not listed themselves, as
    devices; one is healthy when all its partitions are."""
    listed = {device.id for device in devices}
    groups: dict[str, list[base.Device]] = {}
    for device in devices:
        if device.parent is not None and device.parent.id not in listed:
            groups.setdefault(device.parent.id, []).append(device)
    wholes = []
    for parts in groups.values():
        parent, first = parts[0].parent, parts[0]
        assert parent is not None
        sick = next((part for part in parts if not part.healthy), None)
        wholes.append(base.Device(
            id=parent.id, index=parent.index, vendor=first.vendor, model=parent.model,
            memory_total_mb=parent.memory_total_mb, resource=first.resource, numa_node=first.numa_node,
            health=sick.health if sick else base.Health.HEALTHY,
            health_reason=f"partition {sick.id}: {sick.health_reason}" if sick else "",
            pci_bus_id=parent.pci_bus_id, uuid=parent.id,
            device_nodes=tuple(dict.fromkeys(node for part in parts for node in part.device_nodes))))
    return wholes


def published(devices: Sequence[base.Device]) -> list[base.Device]:
    """Every device the slices list: the backend's and the synthesised whole partitionable devices."""
    return [*devices, *whole_devices(devices)]


def members(devices: Sequence[base.Device]) -> dict[str, tuple[base.Device, ...]]:
    """Published device name -> the backend devices a claim on it gets (a whole device: all its partitions)."""
    found: dict[str, tuple[base.Device, ...]] = {names.dns_label(device.id): (device,) for device in devices}
    for whole in whole_devices(devices):
        found[names.dns_label(whole.id)] = tuple(d for d in devices if d.parent is not None and d.parent.id == whole.id)
    return found


def build_pool(devices: Sequence[base.Device], *, driver: str, node: str, generation: int,
               driver_version: str | None = None, pcie_root: Callable[[str], str | None] = lambda bus: None,
               max_per_slice: int = MAX_DEVICES, share_step_mb: int = 0, partitionable: bool = True) -> Pool:
    """The slices for ``devices``; a node without devices still publishes one empty slice (pool is known).

    ``partitionable`` False (the API server drops shared counters): partitions are published as ordinary
    devices and their whole devices not at all.
    """
    if not partitionable:
        devices = [dataclasses.replace(device, parent=None, consumes=()) for device in devices]
    parents = {device.parent.id: device.parent for device in devices if device.parent is not None}
    entries = []
    for device in sorted(published(devices), key=lambda d: (d.index, d.id)):
        counted = device.parent is not None or device.id in parents
        entry = device_entry(device, driver_version=driver_version,
                             pcie_root=pcie_root(device.pci_bus_id) if device.pci_bus_id else None,
                             share_step_mb=0 if counted else share_step_mb)  # no sharing of partitionable devices
        if device.parent is not None:
            entry["attributes"][f"{names.DOMAIN}/parent"] = _string(names.dns_label(device.parent.id))
            entry["consumesCounters"] = [{"counterSet": counter_set_name(device.parent.id),
                                          "counters": _counters(device.consumes)}]
        elif device.id in parents:  # the whole device takes every counter of its set
            entry["consumesCounters"] = [{"counterSet": counter_set_name(device.id),
                                          "counters": _counters(parents[device.id].counters)}]
        entries.append(entry)
    limit = min(max_per_slice, MAX_DEVICES)
    if any("taints" in entry or entry.get("allowMultipleAllocations") or "consumesCounters" in entry
           for entry in entries):
        limit = min(limit, MAX_DEVICES_WITH_TAINTS)
    chunks = [entries[start:start + limit] for start in range(0, len(entries), limit)] or [[]]
    counter_sets = [{"name": counter_set_name(parent_id), "counters": _counters(parent.counters)}
                    for parent_id, parent in sorted(parents.items())]
    set_chunks = [counter_sets[start:start + MAX_COUNTER_SETS]
                  for start in range(0, len(counter_sets), MAX_COUNTER_SETS)]
    total = len(set_chunks) + len(chunks)
    pool = {"name": node, "generation": generation, "resourceSliceCount": total}
    specs = tuple([{"driver": driver, "nodeName": node, "pool": dict(pool), "sharedCounters": sets}
                   for sets in set_chunks]
                  + [{"driver": driver, "nodeName": node, "pool": dict(pool), "devices": chunk} for chunk in chunks])
    return Pool(driver=driver, node=node, generation=generation, slices=specs)


def without_generation(spec: Mapping[str, Any]) -> Json:
    """A spec as compared for changes: generation aside, and the server's defaults on taints dropped."""
    copy: Json = {key: value for key, value in spec.items()
                  if key in ("driver", "nodeName", "pool", "devices", "sharedCounters")}
    pool = dict(copy.get("pool") or {})
    pool.pop("generation", None)
    copy["pool"] = pool
    copy["devices"] = [_strip_server_fields(device) for device in copy.get("devices") or []]
    return copy


def _strip_server_fields(device: Mapping[str, Any]) -> Json:
    result = dict(device)
    if "taints" in result:
        result["taints"] = [{k: v for k, v in taint.items() if k != "timeAdded"} for taint in result["taints"]]
    return result

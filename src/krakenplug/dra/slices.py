"""The ResourceSlices (resource.k8s.io/v1) that describe this node's devices: pure functions.

One vocabulary for every vendor: attributes under ``krakenplug.pcl.ac.cn/`` (vendor, model, uuid, index,
driverVersion, numaNode, and partition for a fixed partition such as a MIG instance) plus the standard ``resource.kubernetes.io/pciBusID`` and ``pcieRoot``, and the
capacity ``krakenplug.pcl.ac.cn/memory``. An Unhealthy device keeps its entry and gets a NoSchedule taint,
so the scheduler stops placing new claims on it while running ones stay. Limits are the API server's:
128 devices per slice (64 once a slice uses taints or multiple allocations), 32 attributes and capacities per device, string
values up to 64 characters.
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


def build_pool(devices: Sequence[base.Device], *, driver: str, node: str, generation: int,
               driver_version: str | None = None, pcie_root: Callable[[str], str | None] = lambda bus: None,
               max_per_slice: int = MAX_DEVICES, share_step_mb: int = 0) -> Pool:
    """The slices for ``devices``; a node without devices still publishes one empty slice (pool is known)."""
    entries = [device_entry(device, driver_version=driver_version,
                            pcie_root=pcie_root(device.pci_bus_id) if device.pci_bus_id else None,
                            share_step_mb=share_step_mb)
               for device in sorted(devices, key=lambda d: (d.index, d.id))]
    limit = min(max_per_slice, MAX_DEVICES)
    if any("taints" in entry or entry.get("allowMultipleAllocations") for entry in entries):
        limit = min(limit, MAX_DEVICES_WITH_TAINTS)
    chunks = [entries[start:start + limit] for start in range(0, len(entries), limit)] or [[]]
    specs = tuple({"driver": driver, "nodeName": node,
                   "pool": {"name": node, "generation": generation, "resourceSliceCount": len(chunks)},
                   "devices": chunk} for chunk in chunks)
    return Pool(driver=driver, node=node, generation=generation, slices=specs)


def without_generation(spec: Mapping[str, Any]) -> Json:
    """A spec as compared for changes: generation aside, and the server's defaults on taints dropped."""
    copy: Json = {key: value for key, value in spec.items() if key in ("driver", "nodeName", "pool", "devices")}
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

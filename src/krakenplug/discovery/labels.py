"""Node labels computed from devices: pure functions, no I/O (NVIDIA GFD's ``lm`` half).

Two kinds of keys, all under ``krakenplug.pcl.ac.cn/``:

* per-vendor keys ``<vendor>.count``, ``<vendor>.model``, ``<vendor>.memory``,
  ``<vendor>.driver-version``, ``<vendor>.model.<model>.count`` and, for partitioned devices,
  ``<vendor>.<partition>.count`` (NVIDIA MIG: ``nvidia.mig-3g.40gb.count``), written only by the process
  (DaemonSet) that runs that vendor's backend;
* node-wide keys ``device.vendor``, ``device.model``, ``device.memory``, ``device.count`` and
  ``device.driver-version``: a copy of the per-vendor keys of the *leading* vendor, the one with the
  most devices (ties: alphabetically first). Because they are a pure function of the per-vendor keys,
  every process that looks at the same node computes the same values, so two DaemonSets on one node
  never fight over them.

Within one vendor, ``model`` is the model with the most devices (ties: alphabetically first) and
``memory`` the smallest memory (MB) among the devices of that model.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping, Sequence

from krakenplug import errors
from krakenplug.backends import base
from krakenplug.discovery import sanitize

DOMAIN = "krakenplug.pcl.ac.cn"
NODE_WIDE = "device"
UNKNOWN_MODEL = "unknown"
_COPIED_FIELDS = ("model", "memory", "driver-version")
_COUNT = re.compile(r"[0-9]{1,9}")


def key(namespace: str, field: str) -> str:
    """``krakenplug.pcl.ac.cn/<namespace>.<field>``."""
    return f"{DOMAIN}/{namespace}.{field}"


def vendor_namespace(vendor: str) -> str:
    """The key namespace of a vendor: its name folded to a lowercase DNS label.

    Raises ConfigError when nothing usable is left, or when the name would clash with the node-wide
    ``device`` namespace.
    """
    namespace = re.sub(r"[_.]+", "-", sanitize.sanitize_value(vendor).lower())
    if not sanitize.is_dns_label(namespace) or namespace == NODE_WIDE:
        raise errors.ConfigError(
            f"discovery: vendor name {vendor!r} cannot name label keys (got {namespace!r}); "
            "it must fold to lowercase letters, digits and dashes and must not be 'device'"
        )
    return namespace


def model_value(model: str) -> str:
    """A model name as a label value; a name with nothing usable left becomes ``unknown``."""
    return sanitize.sanitize_value(model) or UNKNOWN_MODEL


def vendor_labels(vendor: str, devices: Sequence[base.Device], driver_version: str | None) -> dict[str, str]:
    """The per-vendor keys for ``devices`` of one vendor; none at all when there are no devices."""
    if not devices:
        return {}
    namespace = vendor_namespace(vendor)
    per_model = collections.Counter(model_value(device.model) for device in devices)
    leading_model = _leader(per_model)
    labels = {key(namespace, "count"): str(len(devices)), key(namespace, "model"): leading_model}
    memory = min(device.memory_total_mb for device in devices if model_value(device.model) == leading_model)
    if memory > 0:
        labels[key(namespace, "memory")] = str(memory)
    driver = sanitize.sanitize_value(driver_version or "")
    if driver:
        labels[key(namespace, "driver-version")] = driver
    for model, count in sorted(per_model.items()):
        model_key = key(namespace, f"model.{model}.count")
        if sanitize.is_valid_key(model_key):  # a long model name would make the key too long: skip it
            labels[model_key] = str(count)
    per_partition = collections.Counter(device.partition for device in devices if device.partition)
    for partition, count in sorted(per_partition.items()):
        partition_key = key(namespace, f"{sanitize.sanitize_value(partition)}.count")
        if sanitize.is_valid_key(partition_key):
            labels[partition_key] = str(count)
    return labels


def vendor_counts(labels: Mapping[str, str]) -> dict[str, int]:
    """Device counts per vendor read back from ``<vendor>.count`` keys; unreadable ones are ignored."""
    counts: dict[str, int] = {}
    prefix = f"{DOMAIN}/"
    for label_key, value in labels.items():
        if not (label_key.startswith(prefix) and label_key.endswith(".count")):
            continue
        namespace = label_key[len(prefix):-len(".count")]
        if namespace == NODE_WIDE or not sanitize.is_dns_label(namespace):
            continue  # per-model keys (<vendor>.model.<m>.count) contain dots and land here too
        if _COUNT.fullmatch(value) and int(value) > 0:
            counts[namespace] = int(value)
    return counts


def node_wide_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The ``device.*`` keys implied by the per-vendor keys in ``labels`` (empty without devices)."""
    counts = vendor_counts(labels)
    if not counts:
        return {}
    leader = _leader(counts)
    result = {key(NODE_WIDE, "vendor"): leader, key(NODE_WIDE, "count"): str(counts[leader])}
    for field in _COPIED_FIELDS:
        value = labels.get(key(leader, field))
        if value and sanitize.is_valid_value(value):
            result[key(NODE_WIDE, field)] = value
    return result


def labels_for(devices: Iterable[base.Device], driver_version: str | None = None) -> dict[str, str]:
    """Every label a node holding exactly ``devices`` gets, vendors grouped by ``Device.vendor``."""
    by_vendor: dict[str, list[base.Device]] = collections.defaultdict(list)
    for device in devices:
        by_vendor[vendor_namespace(device.vendor)].append(device)
    labels: dict[str, str] = {}
    for vendor, group in sorted(by_vendor.items()):
        labels.update(vendor_labels(vendor, group, driver_version))
    labels.update(node_wide_labels(labels))
    return labels


def _leader(counts: Mapping[str, int]) -> str:
    """The name with the highest count; ties go to the alphabetically first name."""
    return min(counts, key=lambda name: (-counts[name], name))

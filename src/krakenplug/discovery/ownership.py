"""Which labels one process may write or remove, and the smallest change that gets there.

A process running vendor ``v`` owns every key under ``krakenplug.pcl.ac.cn/v.`` and, together with
the other krakenplug processes on the node, the node-wide ``krakenplug.pcl.ac.cn/device.`` keys.
Everything else on the node (other vendors' keys, other projects' labels) is read, never written.
Node-wide keys are recomputed from the per-vendor keys each time, so whichever process writes last
(on a fresh read of the node) leaves them right, and the others then find nothing to change.

``device.vendor`` is also what the chart's DaemonSets select on (an admin may set it by hand before any
agent ran). It is set and corrected but never removed: removing it on a node whose driver is not loaded
yet would evict the very agent that is waiting for the devices to appear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from krakenplug.discovery import labels


SCHEDULING_KEY = labels.key(labels.NODE_WIDE, "vendor")


@dataclasses.dataclass(frozen=True)
class Plan:
    """``desired``: the owned labels as they should be; ``changes``: a merge patch (None removes)."""

    desired: dict[str, str]
    changes: dict[str, str | None]


def owns(namespace: str, label_key: str) -> bool:
    """Whether the process of vendor ``namespace`` manages ``label_key``."""
    return label_key.startswith((labels.key(namespace, ""), labels.key(labels.NODE_WIDE, "")))


def plan(namespace: str, own: Mapping[str, str], current: Mapping[str, str]) -> Plan:
    """What vendor ``namespace`` must change on a node labelled ``current`` so that it shows ``own``.

    ``own`` holds this vendor's keys (empty when it has no devices). Keys it owns that are neither in
    ``own`` nor implied node-wide keys are removed.
    """
    others = {name: value for name, value in current.items() if not owns(namespace, name)}
    desired = {**own, **labels.node_wide_labels({**others, **own})}
    changes: dict[str, str | None] = {name: value for name, value in desired.items() if current.get(name) != value}
    for name in current:
        if owns(namespace, name) and name not in desired and name != SCHEDULING_KEY:
            changes[name] = None
    return Plan(desired=desired, changes=changes)

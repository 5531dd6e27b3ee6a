"""The kubelet's device-manager checkpoint file, written next to kubelet.sock as a real kubelet does.

Some plugins and tools read ``kubelet_internal_checkpoint`` to learn which devices pods hold, so the
simulator keeps one with the same JSON shape. The simulator never reads it back: its allocations
live in memory and survive ``restart()`` the way a real kubelet's survive through this file.
``Checksum`` is a CRC-32 of the data, not the kubelet's Go hash, so a strict kubelet would refuse it.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from krakenplug.testing.state import Allocation, DeviceView

CHECKPOINT_FILE = "kubelet_internal_checkpoint"
NO_TOPOLOGY = "-1"  # the key the kubelet uses for devices without a NUMA node


def render(allocations: Iterable[Allocation], devices: Mapping[str, Mapping[str, DeviceView]]) -> str:
    entries = [{
        "PodUID": allocation.pod_uid,
        "ContainerName": allocation.container,
        "ResourceName": allocation.resource,
        "DeviceIDs": _ids_by_numa(allocation.device_numa),
        "AllocResp": base64.b64encode(allocation.response).decode(),
    } for allocation in allocations]
    data = {"PodDeviceEntries": entries,
            "RegisteredDevices": {resource: list(views) for resource, views in devices.items()}}
    checksum = zlib.crc32(json.dumps(data, sort_keys=True).encode())
    return json.dumps({"Data": data, "Checksum": checksum})


def write(directory: Path, text: str) -> None:
    """Replaces the file atomically so a reader never sees half of it."""
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{CHECKPOINT_FILE}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temp, directory / CHECKPOINT_FILE)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _ids_by_numa(device_numa: Iterable[tuple[str, tuple[int, ...]]]) -> dict[str, list[str]]:
    by_numa: dict[str, list[str]] = {}
    for device_id, nodes in device_numa:
        for key in [str(node) for node in nodes] or [NO_TOPOLOGY]:
            by_numa.setdefault(key, []).append(device_id)
    return by_numa

"""Preferred allocation for whole GPUs: GPUs joined by NVLink first, then the closest common ancestor.

As NVIDIA's plugin does (through go-gpuallocator), each pair of GPUs gets a score and the set with the
highest total wins: every NVLink between the two counts far more than any PCIe relation, and the PCIe
relation counts by how close ``nvmlDeviceGetTopologyCommonAncestor`` says their common ancestor is
(same board, one switch, several switches, host bridge, NUMA node, across the system). Ties go to the set
spanning the fewest NUMA nodes, then to the order the kubelet offered. NVLinks are found with
``nvmlDeviceGetNvLinkState`` and ``nvmlDeviceGetNvLinkRemotePciInfo`` per link; both are read once per GPU
and pair (the wiring does not change while the driver is loaded).

Small requests are searched exhaustively; large ones grow the set greedily.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pynvml

from krakenplug import errors
from krakenplug.backends import _sysfs, _vendorlib, base
from krakenplug.backends.nvidia import nvml
from krakenplug.backends.nvidia.gpus import text

logger = logging.getLogger(__name__)

NVLINK_SCORE = 100  # per link: more than the whole PCIe scale below
EXHAUSTIVE_LIMIT = 5000  # sets to compare before switching to the greedy search
# No NVLink on this GPU (or in this library), or a link number past the GPU's last link.
_NO_MORE_LINKS = (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                  pynvml.NVML_ERROR_INVALID_ARGUMENT)


class Topology:
    """Pair scores of GPUs (by UUID); thread-safe, cached."""

    def __init__(self, api: nvml.Nvml, handle_of: Callable[[str], Any | None]) -> None:
        self._api = api
        self._handle_of = handle_of
        self._lock = threading.Lock()
        self._links: dict[str, collections.Counter[str]] = {}  # UUID -> NVLinks per peer bus ID
        self._levels: dict[frozenset[str], int] = {}

    def score(self, first: base.Device, second: base.Device) -> int:
        links = self._nvlinks(first)[second.pci_bus_id or ""] or self._nvlinks(second)[first.pci_bus_id or ""]
        return NVLINK_SCORE * links + (int(pynvml.NVML_TOPOLOGY_SYSTEM) - self._level(first, second))

    def _nvlinks(self, device: base.Device) -> collections.Counter[str]:
        with self._lock:
            known = self._links.get(device.id)
        if known is not None:
            return known
        peers: collections.Counter[str] = collections.Counter()
        handle = self._handle_of(device.id)
        if handle is None:  # not listed (yet): no links, and nothing to remember
            return peers
        for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
            try:
                if self._api.call("nvmlDeviceGetNvLinkState", handle, link) != pynvml.NVML_FEATURE_ENABLED:
                    continue
                remote = self._api.call("nvmlDeviceGetNvLinkRemotePciInfo", handle, link)
            except _vendorlib.VendorCallError as err:
                if err.code in _NO_MORE_LINKS:
                    break  # no NVLink on this GPU, or past its last link
                continue
            except errors.DeviceQueryError:
                break
            peers[_sysfs.normalize_bus_id(text(remote.busId))] += 1
        logger.debug("nvidia: GPU %s NVLinks: %s", device.id, dict(peers) or "none")
        with self._lock:
            self._links[device.id] = peers
        return peers

    def _level(self, first: base.Device, second: base.Device) -> int:
        pair = frozenset((first.id, second.id))
        with self._lock:
            known = self._levels.get(pair)
        if known is not None:
            return known
        handles = self._handle_of(first.id), self._handle_of(second.id)
        level = int(pynvml.NVML_TOPOLOGY_SYSTEM)
        if None in handles:
            return level
        try:
            level = int(self._api.call("nvmlDeviceGetTopologyCommonAncestor", *handles))
        except errors.DeviceQueryError as err:
            logger.debug("nvidia: no common ancestor of %s and %s: %s", first.id, second.id, err)
        with self._lock:
            self._levels[pair] = level
        return level


def choose(available: Sequence[base.Device], must_include: Sequence[base.Device], size: int,
           score: Callable[[base.Device, base.Device], int]) -> list[str]:
    """IDs of ``size`` devices: every ``must_include`` one plus those that score best together."""
    chosen = list(dict.fromkeys(must_include))
    taken = {device.id for device in chosen}
    candidates = [device for device in available if device.id not in taken]
    missing = max(0, size - len(chosen))
    if missing == 0 or not candidates:
        return [device.id for device in chosen][:max(size, len(chosen))]
    position = {device.id: place for place, device in enumerate(available)}

    def rank(devices: Sequence[base.Device]) -> tuple[int, int, list[int]]:
        total = sum(score(a, b) for a, b in itertools.combinations(devices, 2))
        nodes = len({device.numa_node for device in devices})
        return (total, -nodes, [-position.get(device.id, 0) for device in devices])

    if math.comb(len(candidates), missing) <= EXHAUSTIVE_LIMIT:
        best = max(itertools.combinations(candidates, missing), key=lambda extra: rank([*chosen, *extra]))
        return [device.id for device in (*chosen, *best)]
    while len(chosen) < size and candidates:
        pick = max(candidates, key=lambda device: rank([*chosen, device]))
        chosen.append(pick)
        candidates.remove(pick)
    return [device.id for device in chosen]

"""Vendor-neutral sysfs reads: PCI attributes and NUMA placement under an injectable root."""

from __future__ import annotations

import os
import re

_BUS_ID = re.compile(r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<dev>[0-9a-fA-F]{1,2})"
                     r"\.(?P<fn>[0-7])$")


def normalize_bus_id(bus_id: str) -> str:
    """Canonical sysfs spelling ``dddd:bb:dd.f`` (lower case, 4-digit domain) of a PCI bus ID.

    NVML prints ``00000000:3B:00.0``; sysfs names the directory ``0000:3b:00.0``.
    """
    match = _BUS_ID.match(bus_id.strip())
    if not match:
        raise ValueError(f"not a PCI bus ID: {bus_id!r}")
    domain = int(match["domain"] or "0", 16)
    return f"{domain:04x}:{int(match['bus'], 16):02x}:{int(match['dev'], 16):02x}.{match['fn']}"


def pci_device_dir(sysfs_root: str, bus_id: str) -> str:
    return os.path.join(sysfs_root, "bus", "pci", "devices", normalize_bus_id(bus_id))


def read_attribute(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def numa_node(sysfs_root: str, bus_id: str | None) -> int | None:
    """The device's NUMA node from sysfs; None when unknown (missing, unreadable or -1)."""
    if not bus_id:
        return None
    try:
        value = read_attribute(os.path.join(pci_device_dir(sysfs_root, bus_id), "numa_node"))
    except ValueError:
        return None
    try:
        node = int(value) if value is not None else -1
    except ValueError:
        return None
    return node if node >= 0 else None

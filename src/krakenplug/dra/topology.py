"""The PCIe root complex of a device, for the standard ``resource.kubernetes.io/pcieRoot`` attribute.

Read from sysfs: ``/sys/bus/pci/devices/<bus id>`` links to ``/sys/devices/pci<domain>:<bus>/.../<bus id>``,
and the first path element is the root. The value has the same form as the kubelet's and other
drivers' (``pci0000:00``), so NICs and accelerators on one root can be matched with ``matchAttribute``.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

_ROOT = re.compile(r"^pci[0-9a-f]{4}:[0-9a-f]{2}$")


@functools.lru_cache(maxsize=1024)
def pcie_root(sysfs_root: Path, bus_id: str) -> str | None:
    """``pci<domain>:<bus>`` for ``bus_id``, or None when sysfs does not know the device."""
    link = Path(sysfs_root) / "bus" / "pci" / "devices" / bus_id.lower()
    try:
        target = Path(os.path.realpath(link))
        devices = Path(os.path.realpath(Path(sysfs_root) / "devices"))
        parts = target.relative_to(devices).parts
    except (OSError, ValueError):
        return None
    if not target.exists() or not parts or not _ROOT.match(parts[0]):
        return None
    return parts[0]

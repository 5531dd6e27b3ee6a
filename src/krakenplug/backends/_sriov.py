"""SR-IOV in sysfs, vendor-neutral: which PCI devices are physical functions (PFs), their virtual functions
(VFs), and changing the VF count through ``sriov_numvfs``. Hardware only: how many VFs a node should
have, and whether pods still hold a PF, is the SR-IOV component's business (:mod:`krakenplug.sriov`),
which asks a backend implementing ``base.SupportsSriov``.

Applying follows the kernel's rules (drivers/pci/iov.c): write 0 to ``sriov_numvfs`` first (N -> M
without 0 fails with EBUSY), then N, and wait, bounded, for the ``virtfn<i>`` links. Writes go through
one injectable writer so tests can put a fake kernel (EBUSY/ERANGE and creating VF directories) behind
a fake sysfs tree.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Collection

from krakenplug import errors
from krakenplug.backends import _sysfs
from krakenplug.backends.base import PhysicalFunction, SriovOptions

__all__ = ["PhysicalFunction", "SriovError", "SriovOptions", "SysfsWriter", "find_physical_functions",
           "physical_function_of", "read_physical_function", "set_vf_count", "write_sysfs"]

logger = logging.getLogger(__name__)

SysfsWriter = Callable[[str, str], None]


class SriovError(errors.BackendError):
    """The kernel refused the change, or the VFs did not appear in time."""


# -- sysfs ---------------------------------------------------------------------------------------


def _devices_dir(sysfs_root: str) -> str:
    return os.path.join(sysfs_root, "bus", "pci", "devices")


def _hex_attribute(directory: str, name: str) -> int | None:
    value = _sysfs.read_attribute(os.path.join(directory, name))
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def physical_function_of(sysfs_root: str, bus_id: str) -> str | None:
    """The PF's bus ID when ``bus_id`` is a VF (it has a ``physfn`` link), else None."""
    try:
        link = os.path.join(_sysfs.pci_device_dir(sysfs_root, bus_id), "physfn")
    except ValueError:
        return None
    return os.path.basename(os.path.realpath(link)) if os.path.islink(link) else None


def read_physical_function(sysfs_root: str, bus_id: str) -> PhysicalFunction | None:
    """The PF at ``bus_id`` with its VF state; None when it is not SR-IOV capable (no sriov_totalvfs)."""
    directory = _sysfs.pci_device_dir(sysfs_root, bus_id)
    total = _sysfs.read_attribute(os.path.join(directory, "sriov_totalvfs"))
    if total is None or not total.isdigit():
        return None
    current = _sysfs.read_attribute(os.path.join(directory, "sriov_numvfs")) or "0"
    return PhysicalFunction(bus_id=os.path.basename(directory), total_vfs=int(total),
                            num_vfs=int(current) if current.isdigit() else 0,
                            vf_bus_ids=tuple(_virtual_functions(directory)))


def _virtual_functions(pf_dir: str) -> list[str]:
    try:
        names = [name for name in os.listdir(pf_dir) if name.startswith("virtfn") and name[6:].isdigit()]
    except OSError:
        return []
    names.sort(key=lambda name: int(name[6:]))
    return [os.path.basename(os.path.realpath(os.path.join(pf_dir, name))) for name in names]


def find_physical_functions(sysfs_root: str, *, vendor: int,
                            device_ids: Collection[int] = ()) -> list[PhysicalFunction]:
    """SR-IOV capable PFs of PCI ``vendor`` (and one of ``device_ids`` when given), sorted by bus ID."""
    try:
        entries = sorted(os.listdir(_devices_dir(sysfs_root)))
    except OSError:
        return []
    found = []
    for entry in entries:
        directory = os.path.join(_devices_dir(sysfs_root), entry)
        if _hex_attribute(directory, "vendor") != vendor or os.path.islink(os.path.join(directory, "physfn")):
            continue
        if device_ids and _hex_attribute(directory, "device") not in device_ids:
            continue
        pf = read_physical_function(sysfs_root, entry)
        if pf is not None:
            found.append(pf)
    return found


def write_sysfs(path: str, value: str) -> None:
    """The production writer: one write() of the value, as ``echo N > sriov_numvfs`` does."""
    with open(path, "w") as handle:
        handle.write(value)


def set_vf_count(pf: PhysicalFunction, count: int, *, sysfs_root: str, writer: SysfsWriter,
                 wait_seconds: float) -> PhysicalFunction:
    """Changes ``pf`` to ``count`` VFs (0 first, then count) and waits for the VF links."""
    path = os.path.join(_sysfs.pci_device_dir(sysfs_root, pf.bus_id), "sriov_numvfs")
    if pf.num_vfs:
        _write(writer, path, 0)
    if count:
        try:
            _write(writer, path, count)
        except SriovError as err:
            if pf.num_vfs:  # best effort: do not leave the PF without the VFs it had
                raise SriovError(f"{err}; {_restore(writer, path, pf.num_vfs)}") from err
            raise
    deadline = time.monotonic() + wait_seconds
    while True:
        current = read_physical_function(sysfs_root, pf.bus_id)
        if current is not None and len(current.vf_bus_ids) == count:
            return current
        if time.monotonic() >= deadline:
            seen = len(current.vf_bus_ids) if current else 0
            raise SriovError(f"{pf.bus_id}: {seen} of {count} VFs appeared within {wait_seconds:g} s")
        time.sleep(0.05)


def _write(writer: SysfsWriter, path: str, value: int) -> None:
    try:
        writer(path, str(value))
    except OSError as err:
        raise SriovError(f"writing {value} to {path} failed: {_errno_text(err)}") from err


def _restore(writer: SysfsWriter, path: str, previous: int) -> str:
    try:
        writer(path, str(previous))
    except OSError as err:
        return f"restoring {previous} VFs failed too: {_errno_text(err)}"
    return f"restored the previous {previous} VFs"


def _errno_text(err: OSError) -> str:
    name = errno.errorcode.get(err.errno or 0, str(err.errno))
    hint = {errno.ENOENT: " (the driver does not support SR-IOV configuration through sysfs)",
            errno.EBUSY: " (VFs are enabled; 0 must be written first)",
            errno.ERANGE: " (more than sriov_totalvfs)"}.get(err.errno or 0, "")
    return f"{name}: {os.strerror(err.errno) if err.errno else err}{hint}"

"""Generic SR-IOV: how many virtual functions (VFs) each physical function (PF) should have, and making it so.

Vendor-neutral; a backend supplies its PCI vendor/device IDs (which PFs are its own) and which device IDs
it advertises for a PF, and mixes ``SriovOptions`` into its options.

The wanted VF count comes from, highest priority first: the node label (``sriov_node_label``, read from
the API server and watched), the SR-IOV config file (``sriov_config_file``: YAML
``{defaultNumVfs: N, nodes: {<node>: N}}``, a per-node entry beating the default) and the option
``sriov_num_vfs`` (``krakenplug run --sriov-num-vfs N``). When no source sets a value the PFs are left
as they are (SR-IOV is off unless asked for). A rejected value (not an integer, negative, above the PF's
``sriov_totalvfs``) is logged and posted as an Event, and nothing changes: a lower source is not used
instead, so a typo never silently reconfigures a node.

Applying follows the kernel's rules (drivers/pci/iov.c): write 0 to ``sriov_numvfs`` first (N -> M
without 0 fails with EBUSY), then N, and wait, bounded, for the ``virtfn<i>`` links. A PF is never
changed while the kubelet's PodResources API shows its device or any of its VFs allocated to a pod;
the change is retried at the next reconcile. Writes go through one injectable writer so tests can put a
fake kernel (EBUSY/ERANGE and creating VF directories) behind a fake sysfs tree.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from krakenplug import errors
from krakenplug.backends import _nodelabels, _sysfs

logger = logging.getLogger(__name__)

SysfsWriter = Callable[[str, str], None]
DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"


class SriovOptions(BaseModel):
    """Options of a backend that manages SR-IOV; mixed into its Options class."""

    model_config = ConfigDict(extra="forbid")

    sriov_num_vfs: int | None = Field(
        None, ge=0, description="VFs per device when neither the node label nor the config file sets a count; "
                                "None leaves the devices as they are.",
    )
    sriov_config_file: Path | None = Field(
        None, description="YAML {defaultNumVfs: N, nodes: {<node>: N}} (the chart's ConfigMap); None: not used.",
    )
    sriov_node_label: str | None = Field(None, description="Node label holding the VF count; None: not used.")
    sriov_watch_label: bool = Field(True, description="Watch the node label and re-apply when it changes.")
    kubeconfig: str | None = Field(None, description="Kubeconfig for the label and Events; None: in-cluster.")
    pod_resources_socket: str = Field(
        DEFAULT_POD_RESOURCES_SOCKET, description="Kubelet PodResources socket: which devices pods hold.",
    )
    sriov_vf_wait_seconds: float = Field(10.0, gt=0, description="Bound on waiting for VFs to appear.")


class SriovRejected(errors.ConfigError):
    """A VF count from one source cannot be used; the message names the source and the value."""


class SriovError(errors.BackendError):
    """The kernel refused the change, or the VFs did not appear in time."""


@dataclasses.dataclass(frozen=True)
class PhysicalFunction:
    bus_id: str
    total_vfs: int
    num_vfs: int
    vf_bus_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class WantedVfs:
    count: int | None  # None: no source sets a value
    source: str


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


# -- the wanted count ----------------------------------------------------------------------------


def parse_vf_count(raw: Any, *, source: str) -> int:
    """A VF count from ``source``; SriovRejected naming source and value unless a non-negative integer."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise SriovRejected(f"{source}: VF count must be a non-negative integer, got {raw!r}")
    text = str(raw).strip()
    if not text.lstrip("-").isdigit():
        raise SriovRejected(f"{source}: VF count must be a non-negative integer, got {raw!r}")
    if int(text) < 0:
        raise SriovRejected(f"{source}: VF count must not be negative, got {raw!r}")
    return int(text)


def count_from_config_file(path: Path, node_name: str) -> WantedVfs:
    """The count the config file sets for ``node_name`` (its nodes entry, else defaultNumVfs)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        return WantedVfs(None, f"SR-IOV config file {path} (absent)")
    except (OSError, yaml.YAMLError) as err:
        raise SriovRejected(f"SR-IOV config file {path}: cannot read: {err}") from err
    if data is None:
        return WantedVfs(None, f"SR-IOV config file {path}")
    if not isinstance(data, dict) or not set(data) <= {"defaultNumVfs", "nodes"}:
        raise SriovRejected(f"SR-IOV config file {path}: expected keys defaultNumVfs and nodes, got {data!r}")
    nodes = data.get("nodes") or {}
    if not isinstance(nodes, dict):
        raise SriovRejected(f"SR-IOV config file {path}: nodes must map node names to counts, got {nodes!r}")
    if node_name in nodes:
        source = f"SR-IOV config file {path} nodes.{node_name}"
        return WantedVfs(parse_vf_count(nodes[node_name], source=source), source)
    if data.get("defaultNumVfs") is not None:
        source = f"SR-IOV config file {path} defaultNumVfs"
        return WantedVfs(parse_vf_count(data["defaultNumVfs"], source=source), source)
    return WantedVfs(None, f"SR-IOV config file {path}")


def allocated_device_ids(socket_path: str, *, timeout_seconds: float = 5.0) -> set[str]:
    """IDs of every device the kubelet has allocated to a pod (time-slicing ``::k`` suffixes removed)."""
    import grpc

    from krakenplug.api import podresources_v1_pb2 as pr_pb2
    from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc

    if not os.path.exists(socket_path):
        raise SriovError(f"kubelet PodResources socket {socket_path} does not exist")
    try:
        with grpc.insecure_channel(f"unix://{socket_path}") as channel:
            reply = pr_grpc.PodResourcesListerStub(channel).List(pr_pb2.ListPodResourcesRequest(),
                                                                  timeout=timeout_seconds)
    except grpc.RpcError as err:
        raise SriovError(f"kubelet PodResources List at {socket_path} failed: {err.code().name}") from err
    return {device_id.split("::")[0] for pod in reply.pod_resources for container in pod.containers
            for devices in container.devices for device_id in devices.device_ids}


# -- the controller ------------------------------------------------------------------------------


class SriovController:
    """Keeps one backend's PFs at the wanted VF count; the backend calls ``reconcile()`` now and then.

    ``advertised_ids(pf)`` names the device IDs the backend advertises for ``pf`` and its VFs: the
    PodResources check compares them with what pods hold.
    """

    def __init__(self, options: SriovOptions, *, sysfs_root: str, node_name: str, vendor: int,
                 advertised_ids: Callable[[PhysicalFunction], Collection[str]], device_ids: Collection[int] = (),
                 writer: SysfsWriter = write_sysfs, node_api: _nodelabels.NodeApi | None = None) -> None:
        self._options = options
        self._sysfs_root = sysfs_root
        self._node_name = node_name
        self._vendor = vendor
        self._device_ids = tuple(device_ids)
        self._advertised_ids = advertised_ids
        self._writer = writer
        self._node = node_api or _nodelabels.NodeApi(node_name, kubeconfig=options.kubeconfig)
        self._reported: dict[str, str] = {}

    def physical_functions(self) -> list[PhysicalFunction]:
        return find_physical_functions(self._sysfs_root, vendor=self._vendor, device_ids=self._device_ids)

    def wanted(self) -> WantedVfs:
        """The count of the highest source that sets one; raises SriovRejected or LabelUnknown."""
        label_key = self._options.sriov_node_label
        if label_key:
            raw = self._node.label(label_key, refresh=False)
            if raw not in (None, ""):
                source = f"node label {label_key}"
                return WantedVfs(parse_vf_count(raw, source=source), source)
        if self._options.sriov_config_file is not None:
            from_file = count_from_config_file(self._options.sriov_config_file, self._node_name)
            if from_file.count is not None:
                return from_file
        if self._options.sriov_num_vfs is not None:
            return WantedVfs(self._options.sriov_num_vfs, "option sriov_num_vfs")
        return WantedVfs(None, "no source sets a VF count")

    def reconcile(self) -> bool:
        """Brings every PF to the wanted count where allowed; True when any PF changed."""
        pfs = self.physical_functions()
        if not pfs:
            return False
        try:
            wanted = self.wanted()
        except SriovRejected as err:
            self._report("config", "SriovConfigRejected", f"{err}; VFs left as they are")
            return False
        except _nodelabels.LabelUnknown as err:
            self._report("config", "", f"{err}; VFs left as they are until the label can be read")
            return False
        self._reported.pop("config", None)
        if wanted.count is None:
            return False
        changed = False
        allocated: set[str] | None = None
        for pf in pfs:
            if pf.num_vfs == wanted.count:
                self._reported.pop(pf.bus_id, None)
                continue
            if wanted.count > pf.total_vfs:
                self._report(pf.bus_id, "SriovConfigRejected",
                             f"{wanted.source}: {wanted.count} VFs asked for, but {pf.bus_id} supports at most "
                             f"{pf.total_vfs} (sriov_totalvfs); VFs left as they are")
                continue
            try:
                allocated = allocated if allocated is not None else allocated_device_ids(
                    self._options.pod_resources_socket)
            except SriovError as err:
                self._report(pf.bus_id, "SriovChangeDeferred",
                             f"{pf.bus_id}: not changing {pf.num_vfs} to {wanted.count} VFs: cannot tell whether "
                             f"its devices are in use ({err}); retrying later")
                continue
            changed |= self._change(pf, wanted.count, wanted.source, allocated)
        return changed

    def _change(self, pf: PhysicalFunction, count: int, source: str, allocated: set[str]) -> bool:
        busy = sorted(set(self._advertised_ids(pf)) & allocated)
        if busy:
            self._report(pf.bus_id, "SriovChangeDeferred",
                         f"{pf.bus_id}: not changing {pf.num_vfs} to {count} VFs ({source}): "
                         f"allocated to pods: {', '.join(busy)}; retrying later")
            return False
        try:
            set_vf_count(pf, count, sysfs_root=self._sysfs_root, writer=self._writer,
                         wait_seconds=self._options.sriov_vf_wait_seconds)
        except SriovError as err:
            self._report(pf.bus_id, "SriovApplyFailed", str(err))
            return True  # the 0 may have been written: the device set can differ now
        self._reported.pop(pf.bus_id, None)
        self._node.post_event(reason="SriovConfigured", event_type="Normal",
                              message=f"{pf.bus_id}: {pf.num_vfs} -> {count} VFs ({source})")
        return True

    def watch_label(self, stop: Any, on_change: Callable[[], None]) -> None:
        """Blocks until ``stop`` (a threading.Event), calling ``on_change()`` when the label changes."""
        if self._options.sriov_node_label and self._options.sriov_watch_label and self.physical_functions():
            self._node.watch_label(self._options.sriov_node_label, stop, lambda _value: on_change())

    def close(self) -> None:
        self._node.close()

    def _report(self, subject: str, reason: str, message: str) -> None:
        """Logs and posts (as an Event with ``reason``) a problem once, until it changes or clears."""
        if self._reported.get(subject) == message:
            logger.debug("still: %s", message)
            return
        self._reported[subject] = message
        if reason:
            self._node.post_event(reason=reason, message=message)
        else:
            logger.warning("%s", message)

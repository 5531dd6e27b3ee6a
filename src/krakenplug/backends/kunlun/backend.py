"""The Kunlunxin XPU backend (default resource ``baidu.com/xpu``): devices from XPUML, VFs through SR-IOV.

What a device is:

* ID: the serial number (xpumlDeviceGetSerial). A VF, and a device without a serial, uses its PCI bus ID
  instead (the VFs of one card would share the card's serial).
* Device node ``/dev/xpu<minor>`` (xpumlDeviceGetMinorNumber; the library index where the library lacks
  it), plus ``/dev/xpuctrl`` for every container; ``XPU_VISIBLE_DEVICES`` lists the library indexes.
* Health: xpumlDeviceGetState. RUNNING (201) and UNUSED (0) are healthy; IN_RESET, ERROR, IN_EXCEPTION
  and states we do not know are Unhealthy with the state's name. A missing device node is Unhealthy too.
* Power: the unit of xpumlDeviceGetPowerUsage is unverified (``POWER_WATTS_PER_UNIT``, the one place
  the assumption lives).

SR-IOV: ``set_vf_count`` uses ``xpumlDeviceSetSriovVfNum`` (what the vendor documents, with xpu_smi)
where the library exports it, and falls back to sysfs ``sriov_numvfs`` otherwise. Once VFs are enabled,
XPUML keeps listing the PF (as ``R200-PF``) and lists each VF as a device of its own with its own PCI
bus ID and minor number, hence its own ``/dev/xpuN``; the driver re-numbers ``/dev/xpu*``. A PF with VFs
enabled is recognised by its model id (``*_SRIOV_PF``), ``xpumlDeviceGetHostVxpuMode == SRIOV_ON`` or
sysfs ``sriov_numvfs > 0``, and is not advertised (it keeps no compute of its own). IDs (serial, or PCI
bus ID for a VF) stay the same across the re-numbering; ``allocate`` hands out the device node and index
the device has now, not the ones of the snapshot the caller holds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from krakenplug import errors
from krakenplug.backends import _devicebook, _sriov, _sysfs, _vendorlib, base
from krakenplug.backends.kunlun import xpuml
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

VENDOR_ID = 0x1D22
DEFAULT_RESOURCE = "baidu.com/xpu"
VISIBLE_DEVICES_ENV = "XPU_VISIBLE_DEVICES"
# xpumlDeviceModel_t names, used only when the library has no xpumlDeviceGetName.
MODEL_NAMES = {0: "K200", 1: "K100", 2: "R200", 3: "R300", 9: "RG800"}
_MIB = 1024 * 1024
# Unverified: go-xpuml's header copies NVML's "milliwatts" comment, while xpu-smi prints W; no public
# source settles it. Every power reading is converted here and nowhere else.
POWER_WATTS_PER_UNIT = 0.001


class KunlunOptions(base.BackendOptions, _sriov.SriovOptions):
    sriov_node_label: str | None = Field(
        "baidu.com/sriov-num-vfs", description="Node label with the VF count per card (beats the file and option).",
    )


class KunlunBackend:
    """XPUML through ctypes; thread-safe."""

    name: ClassVar[str] = "kunlun"
    Options: ClassVar[type[KunlunOptions]] = KunlunOptions

    def __init__(self, options: KunlunOptions, *, node_name: str = "",
                 sriov_writer: _sriov.SysfsWriter = _sriov.write_sysfs) -> None:
        self._options = options
        self._lock = threading.RLock()
        self._lib: xpuml.Xpuml | None = None
        self._book = _devicebook.DeviceBook()
        self._last: list[base.Device] = []
        self._listed: list[base.Device] = []  # every device XPUML lists, PFs with VFs included
        self._index_by_id: dict[str, int] = {}
        self._log = TransitionLog(logger)
        self._optional = _vendorlib.OptionalQueries("kunlun")
        self._sysfs_writer = sriov_writer

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._lib is not None:
                return
            lib = xpuml.Xpuml.load(self._options.library_path, timeout_seconds=self._options.call_timeout_seconds,
                                   book=self._book)
            try:
                lib.init()
            except errors.DeviceQueryError as err:
                lib.release()
                raise errors.BackendUnavailable(
                    f"{err} (library {lib.library.path}); check that the kunlun driver is loaded "
                    f"(modprobe kunlun) and that /dev/xpu* exist") from err
            self._lib = lib
        self.devices()

    def close(self) -> None:
        with self._lock:
            lib, self._lib = self._lib, None
        if lib is not None:
            try:
                lib.shutdown()
            except errors.DeviceQueryError as err:
                logger.warning("xpumlShutdown: %s", err)

    # -- Backend ---------------------------------------------------------------------------------

    def devices(self) -> Sequence[base.Device]:
        with self._lock:
            lib = self._require()
            snapshot = self._snapshot(lib)
            self._log_changes(snapshot)
            self._last = snapshot
            self._index_by_id = {device.id: device.index for device in snapshot}
            return list(snapshot)

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        devices = self._current(devices)
        nodes = [node for device in devices for node in device.device_nodes if os.path.exists(node.host_path)]
        control = os.path.join(self._options.dev_root, "xpuctrl")
        if os.path.exists(control):
            nodes.append(base.DeviceNode(control, "/dev/xpuctrl"))
        return base.ContainerAllocation(
            envs={VISIBLE_DEVICES_ENV: ",".join(str(device.index) for device in devices)},
            device_nodes=tuple(nodes),
        )

    def sample(self, device: base.Device) -> base.DeviceSample:
        lib = self._require()
        with self._lock:
            index = self._index_by_id.get(device.id, device.index)
        handle = lib.handle(index)
        key = device.id
        utilization = self._optional.get(lambda: lib.utilization(handle), key=key, what="utilization")
        memory = self._optional.get(lambda: lib.memory(handle), key=key, what="memory")
        temperature = self._optional.get(lambda: lib.temperature(handle), key=key, what="temperature")
        power = self._optional.get(lambda: lib.power_usage(handle), key=key, what="power")
        return base.DeviceSample(
            utilization_percent=float(utilization.xpu) if utilization is not None else None,
            memory_used_mb=memory.usedGlobalMemory / _MIB if memory is not None else None,
            memory_total_mb=memory.totalGlobalMemory / _MIB if memory is not None else None,
            temperature_celsius=float(temperature) if temperature is not None else None,
            power_watts=power * POWER_WATTS_PER_UNIT if power is not None else None,
        )

    def library_info(self) -> base.LibraryInfo:
        lib = self._require()
        sriov = ("xpumlDeviceSetSriovVfNum" if lib.library.exports("xpumlDeviceSetSriovVfNum")
                 else "sysfs sriov_numvfs (the library does not export xpumlDeviceSetSriovVfNum)")
        generation = "xpuml (GetName/GetMinorNumber)" if lib.library.exports("xpumlDeviceGetName") else "xpuml 2022"
        return base.LibraryInfo(library=lib.library.path, api=generation, path="xpuml",
                                reason=f"SR-IOV through {sriov}; power unit unverified")

    # -- SupportsSriov (the SR-IOV component decides the counts) ---------------------------------------

    def sriov_options(self) -> base.SriovOptions:
        return self._options

    def physical_functions(self) -> Sequence[base.PhysicalFunction]:
        return _sriov.find_physical_functions(self._options.sysfs_root, vendor=VENDOR_ID)

    def set_vf_count(self, pf_bus_id: str, count: int) -> None:
        """Sets the VF count of the PF at ``pf_bus_id`` (0 disables): the library call where exported,
        else sysfs. Raises SriovError naming what failed. The driver re-numbers /dev/xpu* afterwards."""
        pf = _sriov.read_physical_function(self._options.sysfs_root, pf_bus_id)
        if self._set_through_library(pf_bus_id, count):
            pass
        elif pf is None:
            raise _sriov.SriovError(f"{pf_bus_id}: not an SR-IOV PF in sysfs and the library cannot set VFs")
        else:
            _sriov.set_vf_count(pf, count, sysfs_root=self._options.sysfs_root, writer=self._sysfs_writer,
                                wait_seconds=self._options.sriov_vf_wait_seconds)
        with self._lock:
            self._book.forget()  # the library re-numbers its devices: identities tied to old indexes are void

    def _set_through_library(self, pf_bus_id: str, count: int) -> bool:
        """True when the library set the count; False when it cannot (not exported, PF not listed)."""
        lib = self._lib
        if lib is None or not lib.library.exports("xpumlDeviceSetSriovVfNum"):
            return False
        with self._lock:
            index = next((device.index for device in self._listed if device.pci_bus_id == pf_bus_id), None)
        if index is None:
            return False
        try:
            lib.set_sriov_vf_num(lib.handle(index), count)
        except errors.DeviceQueryError as err:
            raise _sriov.SriovError(f"{pf_bus_id}: xpumlDeviceSetSriovVfNum({count}) failed: {err}") from err
        logger.info("xpu %s: %d VFs set through xpumlDeviceSetSriovVfNum", pf_bus_id, count)
        return True

    def driver_version(self) -> str | None:
        try:
            return self._require().driver_version()
        except errors.DeviceQueryError:
            return None

    # -- internals -------------------------------------------------------------------------------

    def _require(self) -> xpuml.Xpuml:
        if self._lib is None:
            raise errors.BackendUnavailable("the kunlun backend is not open")
        return self._lib

    def _snapshot(self, lib: xpuml.Xpuml) -> list[base.Device]:
        try:
            count = lib.device_count()
        except errors.DeviceQueryError as err:
            return self._book.all_failed(f"listing devices failed: {err}")
        found = [self._listed_device(lib, index) for index in range(count)]
        self._listed = [device for device, _ in found if device is not None]
        devices = [device for device, pf in found if device is not None and not self._hidden_pf(device, pf)]
        return self._with_parents(devices) + self._book.unlisted(range(count), "XPUML no longer lists this device")

    def _with_parents(self, devices: list[base.Device]) -> list[base.Device]:
        """VFs as partitions of their PF (sysfs ``physfn``), where XPUML lists that PF, for DRA's counters."""
        pfs = {device.pci_bus_id: device for device in self._listed if device.pci_bus_id}
        children: dict[str, list[base.Device]] = {}
        for device in devices:
            pf_bus = _sriov.physical_function_of(self._options.sysfs_root, device.pci_bus_id) \
                if device.pci_bus_id else None
            if pf_bus is not None and pf_bus in pfs:
                children.setdefault(pf_bus, []).append(device)
        linked = {}
        for pf_bus, vfs in children.items():
            pf = pfs[pf_bus]
            linked.update({vf.id: vf for vf in base.as_partitions(
                vfs, parent_id=pf.id, index=pf.index, model=pf.model, memory_total_mb=pf.memory_total_mb,
                pci_bus_id=pf.pci_bus_id)})
        return [linked.get(device.id, device) for device in devices]

    def _listed_device(self, lib: xpuml.Xpuml, index: int) -> tuple[base.Device | None, bool]:
        """The device at ``index`` and whether the library says it is an SR-IOV PF with VFs enabled."""
        try:
            handle = lib.handle(index)
            identity = self._identify(lib, handle)
        except errors.DeviceQueryError as err:
            failed = self._book.failed(index, str(err))
            if failed is None:
                self._log.report(("unknown", index), str(err), logging.WARNING, "xpu %d cannot be identified (%s); "
                                 "it is not advertised until it answers", index, err)
            return failed, False
        pf = self._library_says_pf(lib, handle)
        problems = self._health_problems(lib, handle, identity)
        device = self._book.record(index, identity)  # after the last call: stuck calls that returned are cleared
        return (_devicebook.unhealthy(device, "; ".join(problems)) if problems else device), pf

    def _library_says_pf(self, lib: xpuml.Xpuml, handle: xpuml.Handle) -> bool:
        """A PF with VFs on, by its model id (``*_SRIOV_PF``) or ``xpumlDeviceGetHostVxpuMode``."""
        attributes = self._optional.get(lambda: lib.attributes(handle), key=handle.index, what="attributes")
        if attributes is not None and xpuml.is_sriov_pf_model(attributes.modelId):
            return True
        mode = self._optional.get(lambda: lib.host_vxpu_mode(handle), key=handle.index, what="host vXPU mode")
        return mode == xpuml.SRIOV_ON

    def _identify(self, lib: xpuml.Xpuml, handle: xpuml.Handle) -> base.Device:
        get = self._optional.get
        bus_id = _normalized(get(lambda: lib.pci_bus_id(handle), key=handle.index, what="PCI bus ID"))
        serial = _vendorlib.unsupported_as_none(lambda: lib.serial(handle)) or None  # identity: a failure counts
        minor = get(lambda: lib.minor_number(handle), key=handle.index, what="minor number")
        minor = handle.index if minor is None else minor
        attributes = get(lambda: lib.attributes(handle), key=handle.index, what="attributes")
        is_vf = (attributes is not None and xpuml.is_sriov_vf_model(attributes.modelId)) or (
            bus_id is not None and _sriov.physical_function_of(self._options.sysfs_root, bus_id) is not None)
        device_id = (bus_id if is_vf or not serial else serial) or f"xpu{minor}"
        model = self._model(lib, handle)
        return base.Device(
            id=device_id, index=handle.index, vendor="kunlun", model=model,
            memory_total_mb=self._memory_total_mb(lib, handle),
            resource=self._options.resource_for(model, DEFAULT_RESOURCE),
            numa_node=_sysfs.numa_node(self._options.sysfs_root, bus_id), pci_bus_id=bus_id,
            uuid=None if is_vf else serial,  # VFs share their card's serial
            device_nodes=(base.DeviceNode(os.path.join(self._options.dev_root, f"xpu{minor}"), f"/dev/xpu{minor}"),),
        )

    def _model(self, lib: xpuml.Xpuml, handle: xpuml.Handle) -> str:
        name = self._optional.get(lambda: lib.name(handle), key=handle.index, what="name")
        if name:
            return name
        attributes = self._optional.get(lambda: lib.attributes(handle), key=handle.index, what="attributes")
        if attributes is None:
            return "Kunlun XPU"
        return MODEL_NAMES.get(attributes.modelId, f"Kunlun model {attributes.modelId}")

    def _memory_total_mb(self, lib: xpuml.Xpuml, handle: xpuml.Handle) -> int:
        memory = self._optional.get(lambda: lib.memory(handle), key=handle.index, what="memory")
        if memory is not None:
            return int(memory.totalGlobalMemory // _MIB)
        attributes = self._optional.get(lambda: lib.attributes(handle), key=handle.index, what="attributes")
        return int(attributes.globalMemorySizeMB) if attributes is not None else 0

    def _health_problems(self, lib: xpuml.Xpuml, handle: xpuml.Handle, device: base.Device) -> list[str]:
        problems = []
        try:
            state = _vendorlib.unsupported_as_none(lambda: lib.state(handle))
        except errors.DeviceQueryError as err:
            problems.append(str(err))
        else:
            if state is not None and state not in xpuml.HEALTHY_STATES:
                problems.append(f"device state {xpuml.STATE_NAMES.get(state, 'unknown')} ({state})")
        missing = [node.host_path for node in device.device_nodes if not os.path.exists(node.host_path)]
        if missing:
            problems.append(f"device node {', '.join(missing)} is missing")
        return problems

    def _hidden_pf(self, device: base.Device, library_says_pf: bool) -> bool:
        """A PF whose VFs are enabled: not advertised (its VFs are)."""
        if device.pci_bus_id is None:
            return library_says_pf
        pf = _sriov.read_physical_function(self._options.sysfs_root, device.pci_bus_id)
        hidden = library_says_pf or (pf is not None and pf.num_vfs > 0)
        if hidden:
            self._log.report(("pf", device.pci_bus_id), "hidden", logging.INFO, "xpu %s (%s) has VFs enabled; "
                             "advertising its VFs instead", device.id, device.pci_bus_id)
        else:
            self._log.clear(("pf", device.pci_bus_id), logging.INFO, "xpu %s (%s) is advertised whole again",
                            device.id, device.pci_bus_id)
        return hidden

    def _current(self, devices: Sequence[base.Device]) -> list[base.Device]:
        """``devices`` as the library lists them now: after a re-numbering a device keeps its ID, but its
        index and /dev/xpuN follow the driver. Read afresh, since only the library knows it re-numbered."""
        by_id = {device.id: device for device in self.devices()}
        return [by_id.get(device.id, device) for device in devices]

    def _log_changes(self, snapshot: Sequence[base.Device]) -> None:
        """Logs a device when it appears or its health changes, and when it is no longer advertised."""
        for device in snapshot:
            state = device.health.value + (f" ({device.health_reason})" if device.health_reason else "")
            self._log.report(("device", device.id), state, logging.INFO, "xpu %s (index %d, %s): %s", device.id,
                             device.index, device.model, state)
        for gone in {device.id for device in self._last} - {device.id for device in snapshot}:
            self._log.clear(("device", gone), logging.INFO, "xpu %s is no longer advertised", gone)


def _normalized(bus_id: str | None) -> str | None:
    if not bus_id:
        return None
    try:
        return _sysfs.normalize_bus_id(bus_id)
    except ValueError:
        logger.warning("XPUML reported a malformed PCI bus ID %r", bus_id)
        return None

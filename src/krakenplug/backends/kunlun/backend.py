"""The Kunlunxin XPU backend (default resource ``baidu.com/xpu``): devices from XPUML, VFs through SR-IOV.

What a device is:

* ID: the serial number (xpumlDeviceGetSerial). A VF, and a device without a serial, uses its PCI bus ID
  instead (the VFs of one card would share the card's serial).
* Device node ``/dev/xpu<minor>`` (xpumlDeviceGetMinorNumber; the library index where the library lacks
  it), plus ``/dev/xpuctrl`` for every container; ``XPU_VISIBLE_DEVICES`` lists the library indexes.
* Health: xpumlDeviceGetState. RUNNING (201) and UNUSED (0) are healthy; IN_RESET, ERROR, IN_EXCEPTION
  and states we do not know are Unhealthy with the state's name. A missing device node is Unhealthy too.
* Power: XPUML's documentation is NVML's, so xpumlDeviceGetPowerUsage is read as milliwatts.

SR-IOV mapping (see _sriov.py for the count and how it is applied): once VFs are enabled, XPUML lists each
VF as a device of its own with its own PCI bus ID and minor number, hence its own ``/dev/xpuN``. A listed
device whose sysfs entry has a ``physfn`` link is a VF and is advertised; a PF with VFs enabled is not
(it keeps no compute of its own).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar

from pydantic import Field

from krakenplug import errors
from krakenplug.backends import _devicebook, _sriov, _sysfs, base
from krakenplug.backends.kunlun import xpuml

logger = logging.getLogger(__name__)

VENDOR_ID = 0x1D22
DEFAULT_RESOURCE = "baidu.com/xpu"
VISIBLE_DEVICES_ENV = "XPU_VISIBLE_DEVICES"
# xpumlDeviceModel_t names, used only when the library has no xpumlDeviceGetName.
MODEL_NAMES = {0: "K200", 1: "K100", 2: "R200", 3: "R300", 9: "RG800"}
_MIB = 1024 * 1024
_TICK_SECONDS = 0.2  # how often watch_health looks at its stop and wake-up flags


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
        self._index_by_id: dict[str, int] = {}
        self._hidden_pfs: set[str] = set()
        self._warned: set[str] = set()
        self._sriov = _sriov.SriovController(options, sysfs_root=options.sysfs_root, node_name=node_name,
                                             vendor=VENDOR_ID, advertised_ids=self._advertised_ids,
                                             writer=sriov_writer)

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
        self._reconcile_sriov()

    def close(self) -> None:
        with self._lock:
            lib, self._lib = self._lib, None
        if lib is not None:
            try:
                lib.shutdown()
            except errors.DeviceQueryError as err:
                logger.warning("xpumlShutdown: %s", err)
        self._sriov.close()

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
        utilization = _optional(lib.utilization, handle)
        memory = _optional(lib.memory, handle)
        temperature = _optional(lib.temperature, handle)
        power_mw = _optional(lib.power_milliwatts, handle)
        return base.DeviceSample(
            utilization_percent=float(utilization.xpu) if utilization is not None else None,
            memory_used_mb=memory.usedGlobalMemory / _MIB if memory is not None else None,
            memory_total_mb=memory.totalGlobalMemory / _MIB if memory is not None else None,
            temperature_celsius=float(temperature) if temperature is not None else None,
            power_watts=power_mw / 1000.0 if power_mw is not None else None,
        )

    def driver_version(self) -> str | None:
        try:
            return self._require().driver_version()
        except errors.DeviceQueryError:
            return None

    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        """Polls health (both directions) and re-applies SR-IOV; a label change wakes it at once."""
        wake = threading.Event()
        watcher = threading.Thread(target=self._sriov.watch_label, args=(stop, wake.set), name="kunlun-sriov-label",
                                   daemon=True)
        watcher.start()
        previous = self._safe_devices()
        changed()  # once at the start: nothing that changed before watching began is lost
        next_poll = time.monotonic() + self._options.health_poll_interval_seconds
        try:
            while not stop.wait(_TICK_SECONDS):
                if not wake.is_set() and time.monotonic() < next_poll:
                    continue
                wake.clear()
                next_poll = time.monotonic() + self._options.health_poll_interval_seconds
                self._reconcile_sriov()
                current = self._safe_devices()
                if current is not None and current != previous:
                    previous = current
                    changed()
        finally:
            watcher.join(timeout=30)

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
        devices = [device for device in found if device is not None]
        devices += self._book.unlisted(range(count), "XPUML no longer lists this device")
        return [device for device in devices if not self._is_sriov_pf(device)]

    def _listed_device(self, lib: xpuml.Xpuml, index: int) -> base.Device | None:
        try:
            handle = lib.handle(index)
            identity = self._identify(lib, handle)
        except errors.DeviceQueryError as err:
            failed = self._book.failed(index, str(err))
            if failed is None:
                self._warn_once(f"unknown:{index}:{err}", "xpu %d cannot be identified (%s); it is not advertised "
                                "until it answers", index, err)
            return failed
        problems = self._health_problems(lib, handle, identity)
        device = self._book.record(index, identity)  # after the last call: stuck calls that returned are cleared
        return _devicebook.unhealthy(device, "; ".join(problems)) if problems else device

    def _identify(self, lib: xpuml.Xpuml, handle: xpuml.Handle) -> base.Device:
        raw_bus_id = _optional(lib.pci_bus_id, handle)
        bus_id = _normalized(raw_bus_id)
        serial = _optional(lib.serial, handle) or None
        minor = _optional(lib.minor_number, handle)
        minor = handle.index if minor is None else minor
        is_vf = bus_id is not None and _sriov.physical_function_of(self._options.sysfs_root, bus_id) is not None
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

    @staticmethod
    def _model(lib: xpuml.Xpuml, handle: xpuml.Handle) -> str:
        name = _optional(lib.name, handle)
        if name:
            return name
        attributes = _optional(lib.attributes, handle)
        if attributes is None:
            return "Kunlun XPU"
        return MODEL_NAMES.get(attributes.modelId, f"Kunlun model {attributes.modelId}")

    @staticmethod
    def _memory_total_mb(lib: xpuml.Xpuml, handle: xpuml.Handle) -> int:
        memory = _optional(lib.memory, handle)
        if memory is not None:
            return memory.totalGlobalMemory // _MIB
        attributes = _optional(lib.attributes, handle)
        return int(attributes.globalMemorySizeMB) if attributes is not None else 0

    def _health_problems(self, lib: xpuml.Xpuml, handle: xpuml.Handle, device: base.Device) -> list[str]:
        problems = []
        try:
            state = _optional(lib.state, handle)
        except errors.DeviceQueryError as err:
            problems.append(str(err))
        else:
            if state is not None and state not in xpuml.HEALTHY_STATES:
                problems.append(f"device state {xpuml.STATE_NAMES.get(state, 'unknown')} ({state})")
        missing = [node.host_path for node in device.device_nodes if not os.path.exists(node.host_path)]
        if missing:
            problems.append(f"device node {', '.join(missing)} is missing")
        return problems

    def _is_sriov_pf(self, device: base.Device) -> bool:
        """A PF whose VFs are enabled: not advertised (its VFs are)."""
        if device.pci_bus_id is None:
            return False
        pf = _sriov.read_physical_function(self._options.sysfs_root, device.pci_bus_id)
        hidden = pf is not None and pf.num_vfs > 0
        if hidden != (device.pci_bus_id in self._hidden_pfs):
            (self._hidden_pfs.add if hidden else self._hidden_pfs.discard)(device.pci_bus_id)
            logger.info("xpu %s (%s) %s", device.id, device.pci_bus_id,
                        "has VFs enabled; advertising its VFs instead" if hidden else "is advertised whole again")
        return hidden

    def _advertised_ids(self, pf: _sriov.PhysicalFunction) -> Collection[str]:
        """The IDs under which ``pf`` or its VFs may be allocated (what PodResources would show)."""
        members = {pf.bus_id, *pf.vf_bus_ids}
        with self._lock:
            known = list(self._last)
        return members | {device.id for device in known if device.pci_bus_id in members}

    def _reconcile_sriov(self) -> None:
        if self._sriov.reconcile():
            with self._lock:  # the library re-numbers its devices: forget identities tied to old indexes
                self._book = _devicebook.DeviceBook()
                if self._lib is not None:
                    self._lib.book = self._book
            self._safe_devices()

    def _safe_devices(self) -> tuple[base.Device, ...] | None:
        try:
            return tuple(self.devices())
        except errors.BackendError as err:
            logger.warning("kunlun health poll failed: %s", err)
            return None

    def _log_changes(self, snapshot: Sequence[base.Device]) -> None:
        before = {device.id: device for device in self._last}
        for device in snapshot:
            old = before.pop(device.id, None)
            if old is None or old.health is not device.health:
                state = device.health.value + (f" ({device.health_reason})" if device.health_reason else "")
                logger.info("xpu %s (index %d, %s): %s", device.id, device.index, device.model, state)
        for gone in before:
            logger.info("xpu %s is no longer advertised", gone)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)


def _optional(query: Callable[[xpuml.Handle], Any], handle: xpuml.Handle) -> Any:
    """``query(handle)``, or None when the library or the device does not support it."""
    try:
        return query(handle)
    except xpuml.NotSupported:
        return None


def _normalized(bus_id: str | None) -> str | None:
    if not bus_id:
        return None
    try:
        return _sysfs.normalize_bus_id(bus_id)
    except ValueError:
        logger.warning("XPUML reported a malformed PCI bus ID %r", bus_id)
        return None

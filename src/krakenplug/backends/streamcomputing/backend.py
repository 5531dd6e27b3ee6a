"""The StreamComputing NPU backend (default resource ``streamcomputing.com/npu``, one NPU per container).

Devices come from the PCI bus (sysfs, vendor 0x23e2 device 0x0100, STCP920) and ``/dev/stc<N>``;
STCML (``libstcml.so``) adds names, UUIDs, board status, temperature and power where it is installed,
and ``stc-smi`` adds utilization and memory. Without STCML the devices are still served, with health
from their device nodes and metrics from stc-smi alone. No public STCML header exists (the vendor's page
is titled "C++ API"), so ``open`` logs which path it took and why, and ``library_info`` says so for
``krakenplug devices`` and the exporter's build info.

* ID: the PCI bus ID, so it does not change when STCML is installed or removed (``stc<N>`` when sysfs
  shows no NPU and STCML lists it by index).
* N of ``/dev/stc<N>``: STCML's device index (found through the bus-ID lookup), else stc-smi's NPU
  column for that bus ID, else the position in bus-ID order.
* Health: ``/dev/stc<N>`` must exist; with STCML the board status must be 0 (on).
* Containers get ``/dev/stc<N>``, ``/dev/stc<N>c<k>`` (one per NPC cluster) and ``/dev/stc<N>ctrl``
  (those present), ``STC_VISIBLE_DEVICES=<N,...>`` (our own variable: the vendor documents none) and,
  in "mapping" mode (``mount_hpe_runtime``), the HPE runtime mounted read-only at the same path.
  ``LD_LIBRARY_PATH`` is left to the image.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Hashable, Sequence
from typing import ClassVar

from pydantic import Field

from krakenplug import errors
from krakenplug.backends import _devicebook, _sriov, _sysfs, _vendorlib, base
from krakenplug.backends.streamcomputing import smi, stcml

logger = logging.getLogger(__name__)

VENDOR_ID = 0x23E2
DEVICE_IDS = {0x0100: "STCP920"}
DEFAULT_RESOURCE = "streamcomputing.com/npu"
VISIBLE_DEVICES_ENV = "STC_VISIBLE_DEVICES"


class StreamComputingOptions(base.BackendOptions):
    smi_path: str = Field("/usr/local/hpe/bin/stc-smi", description="stc-smi, for utilization and memory.")
    smi_interval_seconds: float = Field(10.0, gt=0, description="How often stc-smi runs in the background.")
    smi_timeout_seconds: float = Field(5.0, gt=0, description="Bound on one stc-smi run.")
    mount_hpe_runtime: bool = Field(
        True, description="Mount hpe_root read-only into containers (mapping mode); false: the image has it.",
    )
    hpe_root: str = Field("/usr/local/hpe", description="Host path of the HPE runtime, mounted at the same path.")
    max_devices_per_container: int | None = Field(
        1, ge=1, description="NPUs one container may get; the vendor supports 1. None: no limit.",
    )


class StreamComputingBackend:
    """sysfs + /dev, with STCML and stc-smi where installed; thread-safe."""

    name: ClassVar[str] = "streamcomputing"
    Options: ClassVar[type[StreamComputingOptions]] = StreamComputingOptions

    def __init__(self, options: StreamComputingOptions, *, node_name: str = "") -> None:
        self._options = options
        self._lock = threading.RLock()
        self._book = _devicebook.DeviceBook()
        self._optional = _vendorlib.OptionalQueries("streamcomputing")
        self._lib: stcml.Stcml | None = None
        self._opened = False
        self._handles: dict[str, int] = {}
        self._path = base.LibraryInfo(library=None, api="none", path="sysfs+stc-smi", reason="not opened")
        self._smi = smi.SmiPoller(options.smi_path, interval_seconds=options.smi_interval_seconds,
                                  timeout_seconds=options.smi_timeout_seconds)

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._opened:
                return
            self._lib = self._load_library()
            logger.info("streamcomputing: data path %s%s: %s", self._path.path,
                        f" ({self._path.library})" if self._path.library else "", self._path.reason)
            if self._lib is None and not self._pci_npus() and not self._dev_indexes():
                raise errors.BackendUnavailable(
                    f"no StreamComputing NPU found: no STCML library, no PCI device {VENDOR_ID:04x}:0100 under "
                    f"{self._options.sysfs_root} and no stc<N> under {self._options.dev_root}; is the stc driver "
                    f"loaded?")
            self._opened = True
        self._smi.start()

    def _load_library(self) -> stcml.Stcml | None:
        try:
            lib = stcml.Stcml.load(self._options.library_path, timeout_seconds=self._options.call_timeout_seconds,
                                   book=self._book)
        except errors.BackendUnavailable as err:
            self._path = base.LibraryInfo(None, "none", "sysfs+stc-smi",
                                          f"{err}; serving NPUs from sysfs and /dev, metrics from stc-smi only")
            return None
        if not lib.calls.supports("stcmlInit"):
            lib.release()
            self._path = base.LibraryInfo(lib.library.path, "none", "sysfs+stc-smi",
                                          f"{lib.library.path} exports no stcmlInit (a C++ build without "
                                          f"extern \"C\" exports mangled names); serving NPUs from sysfs and /dev, "
                                          f"metrics from stc-smi only")
            return None
        try:
            lib.init()
        except errors.DeviceQueryError as err:
            lib.release()
            raise errors.BackendUnavailable(f"{err} (library {lib.library.path}); check that the stc driver is "
                                            f"loaded (lsmod | grep stc) and /dev/stc* exist") from err
        lookup = "bus-ID lookup" if lib.supports_bus_id_lookup() else "index order (no bus-ID lookup exported)"
        self._path = base.LibraryInfo(lib.library.path, "stcml", "stcml+sysfs+stc-smi",
                                      f"stcmlInit succeeded; NPUs matched to STCML by {lookup}; utilization "
                                      f"and memory from stc-smi (STCML has no getter for them)")
        return lib

    def library_info(self) -> base.LibraryInfo:
        return self._path

    def close(self) -> None:
        self._smi.stop()
        with self._lock:
            lib, self._lib, self._opened = self._lib, None, False
        if lib is not None:
            try:
                lib.shutdown()
            except errors.DeviceQueryError as err:
                logger.warning("stcmlShutdown: %s", err)

    # -- Backend ---------------------------------------------------------------------------------

    def devices(self) -> Sequence[base.Device]:
        with self._lock:
            if not self._opened:
                raise errors.BackendUnavailable("the streamcomputing backend is not open")
            npus = self._pci_npus()
            if not npus:
                return self._unaddressed_devices()
            found = [self._pci_device(position, bus_id, model) for position, (bus_id, model) in enumerate(npus.items())]
            return found + self._book.unlisted(set(npus), "no longer on the PCI bus")

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        limit = self._options.max_devices_per_container
        if limit is not None and len(devices) > limit:
            raise errors.AllocationError(
                f"streamcomputing: a container may use at most {limit} NPU(s); {len(devices)} requested "
                f"({', '.join(device.id for device in devices)})")
        mounts: tuple[base.Mount, ...] = ()
        if self._options.mount_hpe_runtime:
            mounts = (base.Mount(self._options.hpe_root, self._options.hpe_root, read_only=True),)
        return base.ContainerAllocation(
            envs={VISIBLE_DEVICES_ENV: ",".join(str(device.index) for device in devices)},
            device_nodes=tuple(node for device in devices for node in self._device_nodes(device.index)),
            mounts=mounts,
        )

    def sample(self, device: base.Device) -> base.DeviceSample:
        if not self._opened:
            raise errors.BackendUnavailable("the streamcomputing backend is not open")
        table = self._smi.latest()
        row = table.find(bus_id=device.pci_bus_id, index=device.index) if table else None
        temperature, power = self._library_readings(device)
        if temperature is None and row is not None:
            temperature = row.temperature_celsius
        if power is None and row is not None:
            power = row.power_watts
        return base.DeviceSample(
            utilization_percent=row.utilization_percent if row else None,
            memory_used_mb=row.memory_used_mb if row else None,
            memory_total_mb=row.memory_total_mb if row else None,
            temperature_celsius=temperature, power_watts=power,
        )

    def max_devices_per_container(self) -> int | None:
        return self._options.max_devices_per_container

    def driver_version(self) -> str | None:
        lib = self._lib
        if lib is not None:
            try:
                return lib.driver_version()
            except errors.DeviceQueryError:
                pass
        table = self._smi.latest()
        return table.driver_version if table else None

    # -- enumeration -----------------------------------------------------------------------------

    def _pci_npus(self) -> dict[str, str]:
        """NPU physical functions on the PCI bus (bus ID -> model), in bus-ID order."""
        root = os.path.join(self._options.sysfs_root, "bus", "pci", "devices")
        try:
            entries = sorted(os.listdir(root))
        except OSError:
            return {}
        npus = {}
        for entry in entries:
            directory = os.path.join(root, entry)
            model = DEVICE_IDS.get(_pci_id(directory, "device") or -1)
            if (model and _pci_id(directory, "vendor") == VENDOR_ID
                    and _sriov.physical_function_of(self._options.sysfs_root, entry) is None):
                npus[entry] = model
        return npus

    def _dev_indexes(self) -> list[int]:
        try:
            names = os.listdir(self._options.dev_root)
        except OSError:
            return []
        return sorted(int(match[1]) for name in names if (match := re.fullmatch(r"stc(\d+)", name)))

    def _pci_device(self, position: int, bus_id: str, model: str) -> base.Device:
        table = self._smi.latest()
        row = table.find(bus_id=bus_id, index=-1) if table else None
        device = self._device(bus_id, row.index if row else position, row.name if row and row.name else model,
                              bus_id=bus_id, memory_mb=row.memory_total_mb if row else None)
        lib = self._lib
        if lib is None:
            return self._with_node_health(self._book.record(bus_id, device))
        try:
            handle = lib.handle_by_bus_id(bus_id) if lib.supports_bus_id_lookup() else lib.handle_by_index(position)
            device = self._describe(lib, device, handle, key=bus_id)
        except errors.DeviceQueryError as err:
            failed = self._book.failed(bus_id, str(err))
            if failed is None:  # never answered, but sysfs vouches for it: advertise it as Unhealthy
                failed = _devicebook.unhealthy(self._book.record(bus_id, device), str(err))
            return self._with_node_health(failed)
        return self._with_node_health(self._recorded(lib, bus_id, device, handle))

    def _unaddressed_devices(self) -> list[base.Device]:
        """No NPU in sysfs (not mounted?): STCML's list by index, else the /dev/stc<N> nodes."""
        lib = self._lib
        if lib is None:
            return [self._with_node_health(self._device(f"stc{index}", index, DEVICE_IDS[0x0100]))
                    for index in self._dev_indexes()]
        try:
            count = lib.device_count()
        except errors.DeviceQueryError as err:
            return self._book.all_failed(f"listing NPUs failed: {err}")
        devices = []
        for index in range(count):
            try:
                handle = lib.handle_by_index(index)
                device = self._describe(lib, self._device(f"stc{index}", index, DEVICE_IDS[0x0100]), handle, key=index)
            except errors.DeviceQueryError as err:
                failed = self._book.failed(index, str(err))
                devices += [failed] if failed is not None else []
                continue
            devices.append(self._with_node_health(self._recorded(lib, index, device, handle)))
        return devices + self._book.unlisted(range(count), "STCML no longer lists this NPU")

    def _describe(self, lib: stcml.Stcml, device: base.Device, handle: int, *, key: Hashable) -> base.Device:
        """``device`` with what STCML says: its index, name and UUID (or serial)."""
        get = self._optional.get
        index = get(lambda: lib.index(handle, key=key), key=key, what="index")
        name = get(lambda: lib.name(handle, key=key), key=key, what="name")
        uuid = get(lambda: lib.uuid(handle, key=key), key=key, what="UUID") or get(
            lambda: lib.serial(handle, key=key), key=key, what="serial")
        index = device.index if index is None else index
        model = name or device.model
        with self._lock:
            self._handles[device.id] = handle
        return base.Device(
            id=device.id, index=index, vendor="streamcomputing", model=model, memory_total_mb=device.memory_total_mb,
            resource=self._options.resource_for(model, DEFAULT_RESOURCE), numa_node=device.numa_node,
            pci_bus_id=device.pci_bus_id, uuid=uuid or None, device_nodes=self._device_nodes(index),
        )

    def _device(self, device_id: str, index: int, model: str, *, bus_id: str | None = None,
                memory_mb: float | None = None) -> base.Device:
        return base.Device(
            id=device_id, index=index, vendor="streamcomputing", model=model,
            memory_total_mb=int(memory_mb or 0), resource=self._options.resource_for(model, DEFAULT_RESOURCE),
            numa_node=_sysfs.numa_node(self._options.sysfs_root, bus_id), pci_bus_id=bus_id,
            device_nodes=self._device_nodes(index),
        )

    def _device_nodes(self, index: int) -> tuple[base.DeviceNode, ...]:
        """/dev/stc<N>, its cluster nodes /dev/stc<N>c<k> and /dev/stc<N>ctrl, those present."""
        try:
            names = set(os.listdir(self._options.dev_root))
        except OSError:
            return ()
        clusters = sorted((name for name in names if re.fullmatch(rf"stc{index}c\d+", name)),
                          key=lambda name: int(name[len(f"stc{index}c"):]))
        wanted = [f"stc{index}", *clusters, f"stc{index}ctrl"]
        return tuple(base.DeviceNode(os.path.join(self._options.dev_root, name), f"/dev/{name}")
                     for name in wanted if name in names)

    # -- health and readings ---------------------------------------------------------------------

    def _recorded(self, lib: stcml.Stcml, key: Hashable, device: base.Device, handle: int) -> base.Device:
        """Checks the board, then records ``device`` (after its last call, so a stuck call that returned
        no longer counts) and returns it with its health."""
        problem = None
        try:
            status = lib.board_status(handle, key=key)
        except _vendorlib.NotSupported:
            status = stcml.BOARD_ON
        except errors.DeviceQueryError as err:
            status, problem = None, str(err)
        if status not in (None, stcml.BOARD_ON):
            problem = f"board status {'off' if status == 1 else 'unknown'} ({status})"
        device = self._book.record(key, device)
        return _devicebook.unhealthy(device, problem) if problem else device

    def _with_node_health(self, device: base.Device) -> base.Device:
        main = os.path.join(self._options.dev_root, f"stc{device.index}")
        if not os.path.exists(main):
            return _devicebook.unhealthy(device, f"device node {main} is missing")
        return device

    def _library_readings(self, device: base.Device) -> tuple[float | None, float | None]:
        """Core temperature and power from STCML, None each where it cannot tell."""
        with self._lock:
            lib, handle = self._lib, self._handles.get(device.id)
        if lib is None or handle is None:
            return None, None
        key = device.pci_bus_id or device.index
        temperature = self._optional.get(lambda: lib.temperature(handle, key=key), key=key, what="temperature")
        power = self._optional.get(lambda: lib.power_watts(handle, key=key), key=key, what="power")
        return (round(temperature.coreValue, 2) if temperature is not None else None,
                round(power, 2) if power is not None else None)


def _pci_id(directory: str, attribute: str) -> int | None:
    value = _sysfs.read_attribute(os.path.join(directory, attribute))
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None

"""Huawei Ascend NPUs through DCMI.

Identity: each NPU is ``Ascend-<physical id>``. The physical ID is what Huawei's runtime reads in
``ASCEND_VISIBLE_DEVICES`` and what names the device file ``/dev/davinci<physical id>``; it stays the same
across restarts, unlike the logic ID. Health: ``dcmi_get_device_health`` (0 healthy), with the device's
error codes (hex) as the reason, polled both ways every ``health_poll_interval_seconds``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import Field, field_validator

from krakenplug import errors
from krakenplug.backends import _devicebook, _native, _sysfs, _vendorlib, base
from krakenplug.backends.ascend import dcmi

logger = logging.getLogger(__name__)

DEFAULT_RESOURCE = "krakenplug.pcl.ac.cn/ascend"
DEFAULT_LIBRARIES = (
    "/usr/local/Ascend/driver/lib64/driver/libdcmi.so",
    "/usr/local/Ascend/driver/lib64/common/libdcmi.so",
    "/usr/local/dcmi/libdcmi.so",
    "libdcmi.so",
)
SHARED_DEVICE_FILES = ("davinci_manager", "devmm_svm", "hisi_hdc")
VISIBLE_DEVICES_ENV = "ASCEND_VISIBLE_DEVICES"


class AscendOptions(base.BackendOptions):
    driver_mounts: list[str] = Field(
        default_factory=list,
        description="Host driver directories mounted read-only into containers, e.g. /usr/local/Ascend/driver.",
    )

    @field_validator("driver_mounts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """``--backend-opt driver_mounts=/a,/b`` arrives as a string."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


class AscendBackend:
    """Thread-safe; every DCMI call goes through one bounded choke point (``dcmi.Dcmi``)."""

    name: ClassVar[str] = "ascend"
    Options: ClassVar[type[AscendOptions]] = AscendOptions

    def __init__(self, options: AscendOptions, *, node_name: str = "") -> None:
        self._options = options
        self._book = _devicebook.DeviceBook()
        self._dcmi: dcmi.Dcmi | None = None
        self._addresses: dict[str, dcmi.Address] = {}
        self._lock = threading.Lock()

    def open(self) -> None:
        library = _native.NativeLibrary.load(_native.candidates(self._options.library_path, DEFAULT_LIBRARIES),
                                             vendor="Ascend DCMI")
        calls = _vendorlib.VendorCalls(library, dcmi.SIGNATURES, vendor="ascend", book=self._book,
                                       timeout_seconds=self._options.call_timeout_seconds,
                                       code_names=dcmi.CODE_NAMES, unsupported_codes=dcmi.UNSUPPORTED_CODES,
                                       describe_key=dcmi.describe)
        api = dcmi.Dcmi(calls)
        try:
            api.init()
        except errors.DeviceQueryError as err:
            calls.close()
            raise errors.BackendUnavailable(f"dcmi_init in {library.path} failed: {err}; is the Ascend driver "
                                            "installed and /dev/davinci_manager present?") from err
        logger.info("ascend: DCMI loaded from %s", library.path)
        self._dcmi = api

    def close(self) -> None:
        api, self._dcmi = self._dcmi, None
        if api is not None:
            api.calls.close()  # DCMI has no shutdown call; dropping the worker is all there is

    def driver_version(self) -> str | None:
        try:
            return self._api().driver_version()
        except errors.DeviceQueryError as err:
            logger.info("ascend: no driver version: %s", err)
            return None

    def devices(self) -> Sequence[base.Device]:
        api = self._api()
        try:
            addresses = api.addresses()
        except errors.DeviceQueryError as err:
            logger.warning("ascend: cannot list NPUs: %s", err)
            return self._book.all_failed(f"cannot list NPUs: {err}")
        found: list[base.Device] = []
        located: dict[str, dcmi.Address] = {}
        for address in addresses:
            device = self._describe(api, address)
            if device is not None:
                found.append(device)
                located[device.id] = address
        found.extend(self._book.unlisted(set(addresses), "DCMI no longer lists this NPU"))
        with self._lock:
            self._addresses = located
        return found

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        nodes = [node for device in devices for node in device.device_nodes]
        nodes += [node for name in SHARED_DEVICE_FILES if (node := self._device_node(name)) is not None]
        mounts = tuple(base.Mount(path, path, read_only=True) for path in self._options.driver_mounts)
        return base.ContainerAllocation(
            envs={VISIBLE_DEVICES_ENV: ",".join(str(device.index) for device in devices)},
            device_nodes=tuple(nodes), mounts=mounts,
        )

    def sample(self, device: base.Device) -> base.DeviceSample:
        api, address = self._api(), self._address_of(device)
        total, used = _optional(api.memory_mb, address) or (None, None)
        utilization = _optional(api.ai_core_utilization, address)
        return base.DeviceSample(
            utilization_percent=float(utilization) if utilization is not None else None,
            memory_used_mb=float(used) if used is not None else None,
            memory_total_mb=float(total) if total is not None else None,
            temperature_celsius=_as_float(_optional(api.temperature, address)),
            power_watts=_optional(api.power_watts, address),
        )

    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        _devicebook.poll_health(stop, changed, self.devices,
                                interval_seconds=self._options.health_poll_interval_seconds)

    # -- internals -------------------------------------------------------------------------------

    def _api(self) -> dcmi.Dcmi:
        if self._dcmi is None:
            raise errors.BackendUnavailable("ascend backend is not open")
        return self._dcmi

    def _describe(self, api: dcmi.Dcmi, address: dcmi.Address) -> base.Device | None:
        """The NPU at ``address``; its last known identity, Unhealthy, when a query fails."""
        try:
            physical = api.physical_id(address)
            model = api.model(address)
            total_mb, _ = api.memory_mb(address)
            bus_id = _optional(api.bus_id, address)
        except errors.DeviceQueryError as err:
            known = self._book.failed(address, str(err))
            if known is None:
                logger.warning("ascend: skipping NPU at card %d device %d until it answers: %s", *address, err)
            elif self._book.problem_changed(address, str(err)):
                logger.warning("ascend: %s is unhealthy: %s", known.id, err)
            return known
        device = base.Device(
            id=f"Ascend-{physical}", index=physical, vendor="ascend", model=model, memory_total_mb=int(total_mb),
            resource=self._options.resource_for(model, DEFAULT_RESOURCE),
            numa_node=_sysfs.numa_node(self._options.sysfs_root, bus_id), pci_bus_id=bus_id,
            device_nodes=tuple(node for node in [self._device_node(f"davinci{physical}")] if node is not None),
        )
        reason = self._health_problem(api, address)
        device = self._book.record(address, device)
        return _devicebook.unhealthy(device, reason) if reason else device

    def _health_problem(self, api: dcmi.Dcmi, address: dcmi.Address) -> str:
        """"" when DCMI calls the NPU healthy, else the reason (health code and error codes in hex)."""
        try:
            code = api.health(address)
        except errors.DeviceQueryError as err:
            problem = str(err)
        else:
            problem = self._alarm(api, address, code) if code else ""
        if self._book.problem_changed(address, problem):
            if problem:
                logger.warning("ascend: NPU at card %d device %d is unhealthy: %s", *address, problem)
            else:
                logger.info("ascend: NPU at card %d device %d is healthy again", *address)
        return problem

    @staticmethod
    def _alarm(api: dcmi.Dcmi, address: dcmi.Address, code: int) -> str:
        try:
            found = api.error_codes(address)
        except errors.DeviceQueryError as err:
            logger.info("ascend: no error codes for card %d device %d: %s", *address, err)
            found = []
        codes = ", ".join(f"0x{value:08X}" for value in found)
        return f"dcmi health {code}" + (f"; error codes {codes}" if codes else "")

    def _address_of(self, device: base.Device) -> dcmi.Address:
        with self._lock:
            address = self._addresses.get(device.id)
        if address is None:
            self.devices()
            with self._lock:
                address = self._addresses.get(device.id)
        if address is None:
            raise errors.DeviceQueryError(f"ascend: unknown NPU {device.id}")
        return address

    def _device_node(self, name: str) -> base.DeviceNode | None:
        host_path = os.path.join(self._options.dev_root, name)
        return base.DeviceNode(host_path, f"/dev/{name}") if os.path.exists(host_path) else None


def _optional(query: Callable[[dcmi.Address], Any], address: dcmi.Address) -> Any:
    """The query's value, or None when DCMI does not support it on this chip."""
    try:
        return query(address)
    except _vendorlib.NotSupported as err:
        logger.debug("ascend: %s", err)
        return None


def _as_float(value: float | None) -> float | None:
    return float(value) if value is not None else None

"""Cambricon MLUs through CNDev.

Identity: ``MLU-<uuid>`` (what Cambricon's own plugin advertises). ``index`` is CNDev's device index, the
value ``CAMBRICON_VISIBLE_DEVICES`` takes; device files are numbered by the minor number
(``/dev/cambricon_dev<minor>``). Health: ``cndevGetCardHealthState`` (health 1 is healthy), polled both
ways every ``health_poll_interval_seconds``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from krakenplug import errors
from krakenplug.backends import _devicebook, _sysfs, _vendorlib, base
from krakenplug.backends.cambricon import cndev

logger = logging.getLogger(__name__)

DEFAULT_RESOURCE = "krakenplug.pcl.ac.cn/cambricon"
DEFAULT_LIBRARIES = (
    "/usr/local/neuware/lib64/libcndev.so",
    "/usr/lib/x86_64-linux-gnu/libcndev.so",
    "/usr/lib/aarch64-linux-gnu/libcndev.so",
    "/usr/lib64/libcndev.so",
    "libcndev.so",
)
CONTROL_DEVICE = "cambricon_ctl"
VISIBLE_DEVICES_ENV = "CAMBRICON_VISIBLE_DEVICES"


class CambriconOptions(base.BackendOptions):
    """No vendor-specific fields yet: library_path, dev_root and sysfs_root cover the host paths."""


class CambriconBackend:
    """Thread-safe; every CNDev call goes through one bounded choke point (``cndev.Cndev``)."""

    name: ClassVar[str] = "cambricon"
    Options: ClassVar[type[CambriconOptions]] = CambriconOptions

    def __init__(self, options: CambriconOptions, *, node_name: str = "") -> None:
        self._options = options
        self._book = _devicebook.DeviceBook()
        self._cndev: cndev.Cndev | None = None
        self._indexes: dict[str, int] = {}
        self._lock = threading.Lock()

    def open(self) -> None:
        library = _vendorlib.NativeLibrary.load(
            _vendorlib.candidates(self._options.library_path, DEFAULT_LIBRARIES), vendor="Cambricon CNDev")
        calls = _vendorlib.VendorCalls(library, cndev.SIGNATURES, vendor="cambricon", book=self._book,
                                       timeout_seconds=self._options.call_timeout_seconds,
                                       code_names=cndev.CODE_NAMES, unsupported_codes=cndev.UNSUPPORTED_CODES)
        api = cndev.Cndev(calls)
        try:
            api.init()
            api.negotiate()
        except errors.DeviceQueryError as err:
            calls.close()
            raise errors.BackendUnavailable(f"CNDev in {library.path} failed: {err}; is the Cambricon driver "
                                            "loaded (/dev/cambricon_ctl)?") from err
        logger.info("cambricon: CNDev loaded from %s (struct API version %d)", library.path, api.version)
        self._cndev = api

    def close(self) -> None:
        api, self._cndev = self._cndev, None
        if api is None:
            return
        try:
            api.release()
        except errors.DeviceQueryError as err:
            logger.warning("cambricon: %s", err)
        api.calls.close()

    def driver_version(self) -> str | None:
        try:
            return self._api().driver_version()
        except errors.DeviceQueryError as err:
            logger.info("cambricon: no driver version: %s", err)
            return None

    def devices(self) -> Sequence[base.Device]:
        api = self._api()
        try:
            count = api.count()
        except errors.DeviceQueryError as err:
            logger.warning("cambricon: cannot count MLUs: %s", err)
            return self._book.all_failed(f"cannot count MLUs: {err}")
        found: list[base.Device] = []
        located: dict[str, int] = {}
        for index in range(count):
            device = self._describe(api, index)
            if device is not None:
                found.append(device)
                located[device.id] = index
        found.extend(self._book.unlisted(set(range(count)), "CNDev no longer lists this MLU"))
        with self._lock:
            self._indexes = located
        return found

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        nodes = [node for device in devices for node in device.device_nodes]
        control = self._device_node(CONTROL_DEVICE)
        if control is not None:
            nodes.append(control)
        return base.ContainerAllocation(
            envs={VISIBLE_DEVICES_ENV: ",".join(str(device.index) for device in devices)},
            device_nodes=tuple(nodes),
        )

    def sample(self, device: base.Device) -> base.DeviceSample:
        api, index = self._api(), self._index_of(device)
        total, used = _optional(api.memory_mb, index) or (None, None)
        return base.DeviceSample(
            utilization_percent=_as_float(_optional(api.utilization, index)),
            memory_used_mb=_as_float(used), memory_total_mb=_as_float(total),
            temperature_celsius=_as_float(_optional(api.chip_temperature, index)),
            power_watts=_as_float(_optional(api.power_watts, index)),
        )

    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        _devicebook.poll_health(stop, changed, self.devices,
                                interval_seconds=self._options.health_poll_interval_seconds)

    # -- internals -------------------------------------------------------------------------------

    def _api(self) -> cndev.Cndev:
        if self._cndev is None:
            raise errors.BackendUnavailable("cambricon backend is not open")
        return self._cndev

    def _describe(self, api: cndev.Cndev, index: int) -> base.Device | None:
        """The MLU at ``index``; its last known identity, Unhealthy, when a query fails."""
        try:
            api.handle(index)
            uuid = api.uuid(index)
            model = api.model(index)
            total_mb, _ = api.memory_mb(index)
            bus_id = _optional(api.bus_id, index)
            minor = _optional(api.minor, index)
        except errors.DeviceQueryError as err:
            known = self._book.failed(index, str(err))
            if known is None:
                logger.warning("cambricon: skipping MLU %d until it answers: %s", index, err)
            elif self._book.problem_changed(index, str(err)):
                logger.warning("cambricon: %s is unhealthy: %s", known.id, err)
            return known
        numa = _sysfs.numa_node(self._options.sysfs_root, bus_id)
        if numa is None:
            numa = _optional(api.numa_node, index)
        number = index if minor is None else minor
        device = base.Device(
            id=f"MLU-{uuid}", index=index, vendor="cambricon", model=model, memory_total_mb=int(total_mb),
            resource=self._options.resource_for(model, DEFAULT_RESOURCE), numa_node=numa, pci_bus_id=bus_id,
            uuid=uuid, device_nodes=tuple(node for name in (f"cambricon_dev{number}", f"cambricon_ipcm{number}")
                                          if (node := self._device_node(name)) is not None),
        )
        problem = self._health_problem(api, index)
        device = self._book.record(index, device)
        return _devicebook.unhealthy(device, problem) if problem else device

    def _health_problem(self, api: cndev.Cndev, index: int) -> str:
        try:
            state = api.health(index)
        except errors.DeviceQueryError as err:
            problem = str(err)
        else:
            problem = "" if state.health == cndev.HEALTHY else (
                f"cndev health {state.health} (device state "
                f"{cndev.DEVICE_STATES.get(state.deviceState, state.deviceState)}, driver state {state.driverState})")
        if self._book.problem_changed(index, problem):
            if problem:
                logger.warning("cambricon: MLU %d is unhealthy: %s", index, problem)
            else:
                logger.info("cambricon: MLU %d is healthy again", index)
        return problem

    def _index_of(self, device: base.Device) -> int:
        with self._lock:
            index = self._indexes.get(device.id)
        if index is None:
            self.devices()
            with self._lock:
                index = self._indexes.get(device.id)
        if index is None:
            raise errors.DeviceQueryError(f"cambricon: unknown MLU {device.id}")
        return index

    def _device_node(self, name: str) -> base.DeviceNode | None:
        host_path = os.path.join(self._options.dev_root, name)
        return base.DeviceNode(host_path, f"/dev/{name}") if os.path.exists(host_path) else None


def _optional(query: Callable[[int], Any], index: int) -> Any:
    """The query's value, or None when CNDev does not support it on this MLU."""
    try:
        return query(index)
    except _vendorlib.NotSupported as err:
        logger.debug("cambricon: %s", err)
        return None


def _as_float(value: float | None) -> float | None:
    return float(value) if value is not None else None

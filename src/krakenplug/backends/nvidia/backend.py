"""NVIDIA GPUs through NVML (pynvml).

Identity: the GPU UUID (``GPU-...``); ``index`` is NVML's index; the device file is
``/dev/nvidia<minor>``. Health: XID events with recovery (see ``xid.py``), plus NVML queries that fail
or hang, which mark a GPU Unhealthy until they succeed again. MIG devices are not handled.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pynvml
from pydantic import Field, field_validator

from krakenplug import errors
from krakenplug.backends import _devicebook, _sysfs, _vendorlib, base
from krakenplug.backends.nvidia import events, nvml, xid

logger = logging.getLogger(__name__)

DEFAULT_RESOURCE = "krakenplug.pcl.ac.cn/nvidia"
CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
MIB = 1024 * 1024


class NvidiaOptions(base.BackendOptions):
    driver_root: str = Field("/", description="Root of the host driver files; NVML is looked up under it.")
    health_checks: bool = Field(True, description="Watch XID events; false: only failing NVML queries count.")
    ignored_xids: list[int] = Field(default_factory=lambda: [13, 31, 43, 45, 68, 109],
                                    description="XIDs that never mark a GPU unhealthy (application errors).")
    fatal_xids: list[int] = Field(default_factory=list,
                                  description="When set, only these XIDs mark a GPU unhealthy.")

    @field_validator("ignored_xids", "fatal_xids", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``--backend-opt ignored_xids=13,31`` arrives as a string."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


class NvidiaBackend:
    """Thread-safe; every NVML call goes through one bounded choke point (``nvml.Nvml``)."""

    name: ClassVar[str] = "nvidia"
    Options: ClassVar[type[NvidiaOptions]] = NvidiaOptions

    def __init__(self, options: NvidiaOptions, *, node_name: str = "") -> None:
        self._options = options
        self._book = _devicebook.DeviceBook()
        self._marks = xid.XidMarks(xid.XidPolicy(ignored=options.ignored_xids, fatal=options.fatal_xids))
        self._nvml: nvml.Nvml | None = None
        self._lock = threading.Lock()
        self._handles: dict[str, Any] = {}  # UUID -> NVML handle, from the last snapshot
        self._indexes: dict[str, int] = {}

    def open(self) -> None:
        source = nvml.preload(self._options.library_path, self._options.driver_root)
        calls = nvml.Nvml(timeout_seconds=self._options.call_timeout_seconds, book=self._book)
        try:
            calls.call("nvmlInit")
        except errors.DeviceQueryError as err:
            calls.close()
            raise errors.BackendUnavailable(f"nvmlInit with {source} failed: {err}; is the NVIDIA driver loaded "
                                            "and the library mounted (driver_root / library_path)?") from err
        logger.info("nvidia: NVML initialised (%s)", source)
        self._nvml = calls

    def close(self) -> None:
        calls, self._nvml = self._nvml, None
        if calls is None:
            return
        try:
            calls.call("nvmlShutdown")
        except errors.DeviceQueryError as err:
            logger.warning("nvidia: %s", err)
        calls.close()

    def driver_version(self) -> str | None:
        try:
            return _text(self._api().call("nvmlSystemGetDriverVersion"))
        except errors.DeviceQueryError as err:
            logger.info("nvidia: no driver version: %s", err)
            return None

    def devices(self) -> Sequence[base.Device]:
        api = self._api()
        try:
            count = api.call("nvmlDeviceGetCount")
        except errors.DeviceQueryError as err:
            logger.warning("nvidia: cannot count GPUs: %s", err)
            return [self._with_marks(d) for d in self._book.all_failed(f"cannot count GPUs: {err}")]
        found, handles = [], {}
        for index in range(count):
            described = self._describe(api, index)
            if described is not None:
                found.append(described[0])
                handles[described[0].id] = described[1]
        found.extend(self._book.unlisted(set(range(count)), "NVML no longer lists this GPU"))
        with self._lock:
            self._handles = handles
            self._indexes = {device.id: device.index for device in found}
        return [self._with_marks(device) for device in found]

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        nodes = [node for device in devices for node in device.device_nodes]
        nodes += [node for name in CONTROL_DEVICES if (node := self._device_node(name)) is not None]
        return base.ContainerAllocation(envs={VISIBLE_DEVICES_ENV: ",".join(device.id for device in devices)},
                                        device_nodes=tuple(nodes))

    def sample(self, device: base.Device) -> base.DeviceSample:
        api, handle, key = self._api(), self._handle_of(device), device.index
        memory = _optional(api, "nvmlDeviceGetMemoryInfo", handle, key=key)
        utilization = _optional(api, "nvmlDeviceGetUtilizationRates", handle, key=key)
        temperature = _optional(api, "nvmlDeviceGetTemperature", handle, pynvml.NVML_TEMPERATURE_GPU, key=key)
        milliwatts = _optional(api, "nvmlDeviceGetPowerUsage", handle, key=key)
        return base.DeviceSample(
            utilization_percent=float(utilization.gpu) if utilization is not None else None,
            memory_used_mb=memory.used / MIB if memory is not None else None,
            memory_total_mb=memory.total / MIB if memory is not None else None,
            temperature_celsius=float(temperature) if temperature is not None else None,
            power_watts=milliwatts / 1000 if milliwatts is not None else None,
        )

    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        """XID events plus the periodic snapshot/recovery check; returns when ``stop`` is set."""
        interval = self._options.health_poll_interval_seconds
        if not self._options.health_checks:
            _devicebook.poll_health(stop, changed, self.devices, interval_seconds=interval)
            return
        self.devices()  # fresh handles to register
        with self._lock:
            handles = dict(self._handles)
        watcher = events.EventWatcher(self._api(), self._marks, handles, interval_seconds=interval,
                                      recover_probe=self._probe)
        watcher.run(stop, changed, self.devices)

    # -- internals -------------------------------------------------------------------------------

    def _api(self) -> nvml.Nvml:
        if self._nvml is None:
            raise errors.BackendUnavailable("nvidia backend is not open")
        return self._nvml

    def _describe(self, api: nvml.Nvml, index: int) -> tuple[base.Device, Any] | None:
        """The GPU at ``index`` and its handle; its last known identity, Unhealthy, when a query fails."""
        try:
            handle = api.call("nvmlDeviceGetHandleByIndex", index, key=index)
            uuid = _text(api.call("nvmlDeviceGetUUID", handle, key=index))
            model = _text(api.call("nvmlDeviceGetName", handle, key=index))
            memory = api.call("nvmlDeviceGetMemoryInfo", handle, key=index)
            bus_id = _sysfs.normalize_bus_id(_text(api.call("nvmlDeviceGetPciInfo_v3", handle, key=index).busId))
            minor = _optional(api, "nvmlDeviceGetMinorNumber", handle, key=index)
        except (errors.DeviceQueryError, ValueError) as err:
            known = self._book.failed(index, str(err))
            if known is None:
                logger.warning("nvidia: skipping GPU %d until it answers: %s", index, err)
                return None
            if self._book.problem_changed(index, str(err)):
                logger.warning("nvidia: GPU %s is unhealthy: %s", known.id, err)
            return known, None
        if self._book.problem_changed(index, ""):
            logger.info("nvidia: GPU %s answers again", uuid)
        node = self._device_node(f"nvidia{minor}") if minor is not None else None
        device = base.Device(
            id=uuid, index=index, vendor="nvidia", model=model, memory_total_mb=memory.total // MIB,
            resource=self._options.resource_for(model, DEFAULT_RESOURCE),
            numa_node=_sysfs.numa_node(self._options.sysfs_root, bus_id), pci_bus_id=bus_id, uuid=uuid,
            device_nodes=(node,) if node is not None else (),
        )
        return self._book.record(index, device), handle

    def _with_marks(self, device: base.Device) -> base.Device:
        reason = self._marks.reason(device.id)
        return _devicebook.unhealthy(device, reason) if reason else device

    def _probe(self, uuid: str) -> None:
        """The recovery probe: both queries must succeed."""
        api = self._api()
        with self._lock:
            handle, index = self._handles.get(uuid), self._indexes.get(uuid)
        if handle is None:
            raise errors.DeviceQueryError(f"GPU {uuid} is not listed by NVML")
        api.call("nvmlDeviceGetMemoryInfo", handle, key=index)
        api.call("nvmlDeviceGetUtilizationRates", handle, key=index)

    def _handle_of(self, device: base.Device) -> Any:
        with self._lock:
            handle = self._handles.get(device.id)
        if handle is None:
            handle = self._api().call("nvmlDeviceGetHandleByUUID", device.id, key=device.index)
        return handle

    def _device_node(self, name: str) -> base.DeviceNode | None:
        host_path = os.path.join(self._options.dev_root, name)
        return base.DeviceNode(host_path, f"/dev/{name}") if os.path.exists(host_path) else None


def _optional(api: nvml.Nvml, name: str, *args: Any, key: int) -> Any:
    """The call's result, or None when this GPU or driver does not offer it."""
    try:
        return api.call(name, *args, key=key)
    except _vendorlib.NotSupported as err:
        logger.debug("nvidia: %s", err)
        return None


def _text(value: str | bytes) -> str:
    return (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()

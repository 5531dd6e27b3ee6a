"""NVIDIA GPUs and MIG devices through NVML (pynvml).

Identity: the GPU UUID (``GPU-...``) or, for a MIG device, its MIG UUID (``MIG-...``); ``index`` is
NVML's GPU index, and ``1000 * (GPU index + 1) + MIG index`` for a MIG device (unique on the node, stable
while the MIG layout stays). Device files: ``/dev/nvidia<minor>``, plus the MIG capability nodes for a MIG
device (``mig.py``). Which devices are advertised follows ``mig_strategy`` (``mig.py``). Health: XID
events with recovery (``xid.py``, ``events.py``), plus NVML queries that fail or hang, which mark a device
Unhealthy until they succeed again. Memory: ``gpus.py``; what stays listed when a GPU fails or vanishes:
``listing.py``; preferred allocation: ``topology.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pynvml
from pydantic import Field, field_validator

from krakenplug import errors
from krakenplug.backends import _devicebook, _locate, _sysfs, base
from krakenplug.backends.nvidia import events, gpus, listing, mig, nvml, topology, xid
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

DEFAULT_RESOURCE = "krakenplug.pcl.ac.cn/nvidia"
DEFAULT_MIG_PREFIX = "krakenplug.pcl.ac.cn/nvidia-mig-"
CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
MIB = gpus.MIB
MIG_INDEX_BASE = 1000
NO_INSTANCE = 0xFFFFFFFF  # an event's GPU/compute instance ID when it is about the whole GPU


class NvidiaOptions(base.BackendOptions):
    driver_root: str = Field("/", description="Root of the host driver files; NVML is looked up under it.")
    proc_root: str = Field("/proc", description="Where /proc/driver/nvidia (MIG capabilities) is read.")
    health_checks: bool = Field(True, description="Watch XID events; false: only failing NVML queries count.")
    ignored_xids: list[int] = Field(default_factory=lambda: [13, 31, 43, 45, 68, 109],
                                    description="XIDs that never mark a GPU unhealthy (application errors).")
    fatal_xids: list[int] = Field(default_factory=list,
                                  description="When set, only these XIDs mark a GPU unhealthy.")
    mig_strategy: mig.Strategy = Field("none", description="none: GPUs whole; single: MIG devices under the "
                                       "vendor resource; mixed: one resource per MIG profile.")
    mig_resource_prefix: str = Field(DEFAULT_MIG_PREFIX, description="mixed: MIG devices of profile P are "
                                     "advertised as <prefix>P unless a resources rule matches their name.")

    @field_validator("ignored_xids", "fatal_xids", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``--backend-opt ignored_xids=13,31`` arrives as a string."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("mig_resource_prefix")
    @classmethod
    def _resource_prefix(cls, value: str) -> str:
        domain, slash, name = value.partition("/")
        if not domain or not slash or "/" in name or (name and not name[0].isalnum()):
            raise ValueError(f"must be <domain>/<name start>, e.g. {DEFAULT_MIG_PREFIX!r} (got {value!r})")
        return value


class NvidiaBackend:
    """Thread-safe; every NVML call goes through one bounded choke point (``nvml.Nvml``)."""

    name: ClassVar[str] = "nvidia"
    Options: ClassVar[type[NvidiaOptions]] = NvidiaOptions

    def __init__(self, options: NvidiaOptions, *, node_name: str = "") -> None:
        self._options = options
        self._mig_rules = options.model_copy(update={"resource_name": None})  # rules only, for mixed
        self._book = _devicebook.DeviceBook()
        self._marks = xid.XidMarks(xid.XidPolicy(ignored=options.ignored_xids, fatal=options.fatal_xids))
        self._log = TransitionLog(logger)
        self._nvml: nvml.Nvml | None = None
        self._memory: gpus.MemoryReader | None = None
        self._topology: topology.Topology | None = None
        self._source = ""
        self._lock = threading.Lock()
        self._handles: dict[str, Any] = {}  # device ID -> NVML handle, from the last snapshot
        self._keys: dict[str, int] = {}  # device ID -> GPU index (the key of its calls)
        self._gpu_handles: dict[str, Any] = {}  # UUID -> handle of every GPU the snapshots listed
        self._mig_places: dict[str, list[tuple[int, int, str]]] = {}  # GPU UUID -> (GI, CI, MIG UUID)
        self._listing = listing.Listing(self._book)
        # NVML and driver versions cannot change while NVML is initialised (a driver upgrade unloads the
        # module under it, and the backend is opened again): asked once per open, not on every scrape.
        self._versions: dict[str, str] = {}

    def open(self) -> None:
        source = nvml.preload(self._options.library_path, self._options.driver_root)
        calls = nvml.Nvml(timeout_seconds=self._options.call_timeout_seconds, book=self._book)
        try:
            calls.call("nvmlInit")
        except errors.DeviceQueryError as err:
            calls.close()
            raise errors.BackendUnavailable(f"nvmlInit with {source} failed: {err}; is the NVIDIA driver loaded "
                                            "and the library mounted (driver_root / library_path)?") from err
        self._nvml, self._source = calls, source
        self._versions = {}
        self._memory = gpus.MemoryReader(calls)
        self._topology = topology.Topology(calls, self._handle_by_id)
        logger.info("nvidia: NVML %s initialised (%s), driver %s, mig_strategy=%s", self._nvml_version() or "?",
                    source, self.driver_version() or "?", self._options.mig_strategy)

    def close(self) -> None:
        calls, self._nvml = self._nvml, None
        self._versions = {}
        if calls is None:
            return
        try:
            calls.call("nvmlShutdown")
        except errors.DeviceQueryError as err:
            logger.warning("nvidia: %s", err)
        calls.close()

    def driver_version(self) -> str | None:
        try:
            return self._version("nvmlSystemGetDriverVersion")
        except errors.DeviceQueryError as err:
            logger.info("nvidia: no driver version: %s", err)
            return None

    def library_info(self) -> base.LibraryInfo:
        memory = self._memory.generation if self._memory else "v2"
        return base.LibraryInfo(
            library=self._source or None,
            api=f"NVML {self._nvml_version() or 'unknown'} (driver {self.driver_version() or 'unknown'})",
            path=f"pynvml; memory {memory}; mig_strategy={self._options.mig_strategy}",
            reason="; ".join(filter(None, [
                "memory v1: used includes the driver's reserved memory" if memory == "v1" else "",
                self._log.active("mig") or ""])),  # a refused MIG layout says so here too
        )

    def devices(self) -> Sequence[base.Device]:
        api = self._api()
        try:
            count = api.call("nvmlDeviceGetCount")
        except errors.DeviceQueryError as err:
            logger.warning("nvidia: cannot count GPUs: %s", err)
            return [self._with_marks(d) for d in self._listing.unlisted(set(), f"cannot count GPUs: {err}")]
        listed, failed, mig_devices = [], [], {}
        for index in range(count):
            try:
                gpu = gpus.read_gpu(api, self._reader(), index)
                if gpu.mig_enabled and self._options.mig_strategy != "none":
                    mig_devices[index] = gpus.read_mig_devices(api, self._reader(), gpu)
            except (errors.DeviceQueryError, ValueError) as err:
                failed.extend(self._listing.failed(index, str(err)))
                continue
            listed.append(gpu)
        found = self._advertise(listed, mig_devices) + failed
        found += self._listing.unlisted({device.id for device in found}, "NVML no longer lists this GPU")
        return [self._with_marks(device) for device in found]

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        nodes = list(dict.fromkeys(node for device in devices for node in device.device_nodes))  # MIG: one parent
        nodes += _locate.present_nodes(self._options.dev_root, CONTROL_DEVICES)
        return base.ContainerAllocation(envs={VISIBLE_DEVICES_ENV: ",".join(device.id for device in devices)},
                                        device_nodes=tuple(nodes))

    def sample(self, device: base.Device) -> base.DeviceSample:
        api, handle = self._api(), self._handle_of(device)
        key = self._key_of(device)
        memory = gpus.optional_memory(self._reader(), handle, key=key)
        utilization = gpus.optional(api, "nvmlDeviceGetUtilizationRates", handle, key=key)
        temperature = gpus.optional(api, "nvmlDeviceGetTemperature", handle, pynvml.NVML_TEMPERATURE_GPU, key=key)
        milliwatts = gpus.optional(api, "nvmlDeviceGetPowerUsage", handle, key=key)
        return base.DeviceSample(
            utilization_percent=float(utilization.gpu) if utilization is not None else None,
            memory_used_mb=memory.used_bytes / MIB if memory is not None else None,
            memory_total_mb=memory.total_bytes / MIB if memory is not None else None,
            memory_reserved_mb=memory.reserved_bytes / MIB if memory and memory.reserved_bytes is not None else None,
            temperature_celsius=float(temperature) if temperature is not None else None,
            power_watts=milliwatts / 1000 if milliwatts is not None else None,
        )

    def preferred_allocation(self, available: Sequence[base.Device], must_include: Sequence[base.Device],
                             size: int) -> list[str]:
        """Whole GPUs: NVLink-joined, then closest common ancestor (``topology.py``); MIG devices: NUMA order."""
        if self._topology is None or any(self._is_mig(device) for device in available):
            ordered = sorted(available, key=lambda d: (d.numa_node is None, d.numa_node or 0, d.index))
            return topology.choose(ordered, must_include, size, lambda a, b: 0)
        return topology.choose(available, must_include, size, self._topology.score)

    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        """XID events plus the periodic recovery check; returns when ``stop`` is set.

        The device hub re-reads ``devices()`` on its own schedule; without health checks there is
        nothing to watch, so this returns at once.
        """
        if not self._options.health_checks:
            changed()
            return
        self.devices()  # fresh handles for the event targets
        watcher = events.EventWatcher(self._api(), self._marks, gpus=self._physical_gpus, targets=self._event_targets,
                                      all_ids=self._all_ids, interval_seconds=self._options.health_poll_interval_seconds,
                                      recover_probe=self._probe)
        watcher.run(stop, changed)

    # -- devices ---------------------------------------------------------------------------------

    def _advertise(self, listed: list[gpus.Gpu], mig_devices: dict[int, list[gpus.MigDevice]]) -> list[base.Device]:
        layout = mig.layout(self._options.mig_strategy, listed, mig_devices)
        if layout.refused:
            self._log.report("mig", layout.refused, logging.ERROR, "nvidia: %s", layout.refused)
        else:
            self._log.clear("mig", logging.INFO, "nvidia: the MIG layout fits mig_strategy=%s again",
                            self._options.mig_strategy)
        for note in layout.notes:
            self._log.report(("mig-note", note), note, logging.WARNING, "nvidia: %s; it is not advertised", note)
        whole = {gpu.index: self._whole_device(gpu) for gpu in listed}  # recorded for all, for their identity
        for gpu in listed:
            if gpu.mig_enabled and self._options.mig_strategy == "none":
                self._log.report(("whole", gpu.uuid), "mig", logging.INFO,
                                 "nvidia: GPU %s has MIG enabled; mig_strategy=none advertises it whole", gpu.uuid)
        by_gpu: dict[int, list[base.Device]] = {}
        for device in layout.mig_devices:
            by_gpu.setdefault(device.gpu.index, []).append(self._mig_device(device, whole[device.gpu.index]))
        for index, found in by_gpu.items():  # the GPU whole, for DRA's shared counters
            parent = whole[index]
            by_gpu[index] = base.as_partitions(found, parent_id=parent.id, index=parent.index, model=parent.model,
                                               memory_total_mb=parent.memory_total_mb, pci_bus_id=parent.pci_bus_id)
        self._remember(listed, layout, mig_devices)
        advertised = [whole[gpu.index] for gpu in layout.whole]
        self._listing.update({gpu.index: gpu.uuid for gpu in listed}, advertised, by_gpu, partitioned=[
            gpu.index for gpu in listed if gpu.mig_enabled and self._options.mig_strategy != "none"])
        return advertised + [d for found in by_gpu.values() for d in found]

    def _whole_device(self, gpu: gpus.Gpu) -> base.Device:
        if self._book.problem_changed(gpu.index, ""):
            logger.info("nvidia: GPU %s answers", gpu.uuid)
        node_names = [f"nvidia{gpu.minor}"] if gpu.minor is not None else []
        memory_mb = gpu.memory.total_bytes // MIB if gpu.memory else 0
        if gpu.memory is None:
            known = self._book.last_known(gpu.index)
            memory_mb = known.memory_total_mb if known is not None and known.id == gpu.uuid else 0
            self._log.report(("memory", gpu.uuid), "absent", logging.INFO,
                             "nvidia: GPU %s gives no memory info; listed with the last known total (%d MB; "
                             "0 = unknown)", gpu.uuid, memory_mb)
        device = base.Device(
            id=gpu.uuid, index=gpu.index, vendor="nvidia", model=gpu.name, memory_total_mb=memory_mb,
            resource=self._options.resource_for(gpu.name, DEFAULT_RESOURCE),
            numa_node=_sysfs.numa_node(self._options.sysfs_root, gpu.bus_id), pci_bus_id=gpu.bus_id, uuid=gpu.uuid,
            device_nodes=_locate.present_nodes(self._options.dev_root, node_names),
        )
        return self._book.record(gpu.index, device)

    def _mig_device(self, device: gpus.MigDevice, parent: base.Device) -> base.Device:
        if self._options.mig_strategy == "single":
            resource = self._options.resource_for(device.name, DEFAULT_RESOURCE)
        else:
            resource = self._mig_rules.resource_for(device.name, self._options.mig_resource_prefix + device.profile)
        problem = ""
        try:
            minor = device.gpu.minor if device.gpu.minor is not None else device.gpu.index
            caps = mig.capability_nodes(self._options.proc_root, self._options.dev_root, minor,
                                        device.gpu_instance, device.compute_instance)
        except mig.MissingCapability as err:
            caps, problem = (), f"MIG capability device missing: {err}"
            self._log.report(("caps", device.uuid), problem, logging.WARNING, "nvidia: MIG device %s: %s",
                             device.uuid, problem)
        built = base.Device(
            id=device.uuid, index=MIG_INDEX_BASE * (device.gpu.index + 1) + device.position, vendor="nvidia",
            model=device.name, memory_total_mb=device.memory_mb, resource=resource, numa_node=parent.numa_node,
            pci_bus_id=parent.pci_bus_id, uuid=device.uuid, device_nodes=(*parent.device_nodes, *caps),
            partition=f"mig-{device.profile}",
        )
        if not parent.healthy:  # a call of this GPU is stuck
            built = _devicebook.unhealthy(built, parent.health_reason)
        return _devicebook.unhealthy(built, problem) if problem else built

    def _remember(self, listed: list[gpus.Gpu], layout: mig.Layout,
                  mig_devices: dict[int, list[gpus.MigDevice]]) -> None:
        """Handles and MIG placements for samples, events and probes."""
        handles = {gpu.uuid: gpu.handle for gpu in listed}
        keys = {gpu.uuid: gpu.index for gpu in listed}
        places: dict[str, list[tuple[int, int, str]]] = {}
        for found in mig_devices.values():
            for device in found:
                handles[device.uuid], keys[device.uuid] = device.handle, device.gpu.index
                places.setdefault(device.gpu.uuid, []).append(
                    (device.gpu_instance, device.compute_instance, device.uuid))
        with self._lock:
            self._handles.update(handles)
            self._keys.update(keys)
            self._gpu_handles.update({gpu.uuid: gpu.handle for gpu in listed})
            self._mig_places = places

    def _with_marks(self, device: base.Device) -> base.Device:
        reason = self._marks.reason(device.id)
        return _devicebook.unhealthy(device, reason) if reason else device

    # -- events and probes -------------------------------------------------------------------------

    def _physical_gpus(self) -> dict[str, Any]:
        """UUID -> handle of every GPU NVML lists now (GPUs that appeared since the last snapshot too)."""
        api, found = self._api(), {}
        try:
            for index in range(api.call("nvmlDeviceGetCount")):
                try:
                    handle = api.call("nvmlDeviceGetHandleByIndex", index, key=index)
                    found[gpus.text(api.call("nvmlDeviceGetUUID", handle, key=index))] = handle
                except errors.DeviceQueryError as err:
                    logger.debug("nvidia: GPU %d not registered for events yet: %s", index, err)
        except errors.DeviceQueryError as err:
            logger.debug("nvidia: cannot list GPUs for events: %s", err)
        return found

    def _event_targets(self, event: Any) -> list[str]:
        """The device IDs an XID event concerns, found by its GPU's UUID and its (GI, CI)."""
        if not event.device:
            return self._all_ids()
        try:
            uuid = gpus.text(self._api().call("nvmlDeviceGetUUID", event.device))
        except errors.DeviceQueryError as err:
            logger.warning("nvidia: cannot name the GPU of XID %d (%s); marking every device", event.eventData, err)
            return self._all_ids()
        with self._lock:
            known = uuid in self._gpu_handles
            places = list(self._mig_places.get(uuid, ()))
        if not known:
            logger.info("nvidia: ignoring XID %d of GPU %s, which this backend does not list", event.eventData, uuid)
            return []
        gi, ci = event.gpuInstanceId, event.computeInstanceId
        if gi != NO_INSTANCE and ci != NO_INSTANCE:
            return [uuid, *(mig_uuid for g, c, mig_uuid in places if (g, c) == (gi, ci))]
        return [uuid, *(mig_uuid for _, _, mig_uuid in places)]

    def _all_ids(self) -> list[str]:
        with self._lock:
            return list(self._handles)

    def _probe(self, device_id: str) -> None:
        """The recovery probe: no query may fail; one the device does not offer does not count."""
        api = self._api()
        with self._lock:
            handle, key = self._handles.get(device_id), self._keys.get(device_id)
        if handle is None:
            raise errors.DeviceQueryError(f"device {device_id} is not listed by NVML")
        api.call("nvmlDeviceGetUUID", handle, key=key)
        self._reader().read(handle, key=key)
        gpus.optional(api, "nvmlDeviceGetUtilizationRates", handle, key=key)

    # -- internals -------------------------------------------------------------------------------

    def _api(self) -> nvml.Nvml:
        if self._nvml is None:
            raise errors.BackendUnavailable("nvidia backend is not open")
        return self._nvml

    def _reader(self) -> gpus.MemoryReader:
        if self._memory is None:
            raise errors.BackendUnavailable("nvidia backend is not open")
        return self._memory

    def _nvml_version(self) -> str | None:
        try:
            return self._version("nvmlSystemGetNVMLVersion")
        except errors.DeviceQueryError as err:
            logger.debug("nvidia: no NVML version: %s", err)
            return None

    def _version(self, function: str) -> str:
        """A version string from NVML, remembered for this NVML session once it was read (a failure is not)."""
        known = self._versions.get(function)
        if known is None:
            known = self._versions[function] = gpus.text(self._api().call(function))
        return known

    def _is_mig(self, device: base.Device) -> bool:
        return device.index >= MIG_INDEX_BASE

    def _handle_by_id(self, device_id: str) -> Any | None:
        with self._lock:
            return self._handles.get(device_id)

    def _handle_of(self, device: base.Device) -> Any:
        handle = self._handle_by_id(device.id)
        if handle is None:
            handle = self._api().call("nvmlDeviceGetHandleByUUID", device.id, key=self._key_of(device))
        return handle

    def _key_of(self, device: base.Device) -> int:
        with self._lock:
            return self._keys.get(device.id, device.index)

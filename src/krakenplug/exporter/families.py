"""The metric contract: names, units, labels and HELP text, the same for every vendor.

``FamilyBuilder.build()`` turns one scrape's inputs (a vendor reading, the pod map, the exporter's own
state) into plain ``Family`` values. Both exposition paths render these: prometheus_client (through the
collector, for any registry and any format) and the fast renderer in ``exposition`` for the two formats
Prometheus negotiates; a test keeps their bytes identical.

Units follow the product contract: utilization in percent, memory in MiB (the metric names say MB for
historical reasons; HELP says MiB). ``base_unit_metrics`` adds the Prometheus base-unit twins. A value
the vendor does not report has no series (never a fake 0).

Label sets change only when devices, their health or the pod map change, which is rare next to
scrapes; a ``_Plan`` holds them (and the info, health and allocation families, which hold nothing else)
until then, so a scrape only adds the values it has just read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from krakenplug.backends import base
from krakenplug.exporter import attribution
from krakenplug.exporter.reader import Reading

__all__ = ["Family", "FamilyBuilder"]

MIB = 1048576.0

DEVICE_LABELS = ("node_name", "vendor", "device_index", "pod", "namespace", "container")
INFO_LABELS = ("node_name", "vendor", "device_index", "device_id", "uuid", "model", "driver_version",
               "pci_bus_id", "resource")
HEALTH_LABELS = ("node_name", "vendor", "device_index")
ALLOCATION_LABELS = ("node_name", "vendor", "device_index", "pod", "namespace", "container", "resource")
COLLECTOR_LABELS = ("vendor",)
BUILD_LABELS = ("version", "python_version")
BACKEND_LABELS = ("vendor", "vendor_library", "vendor_api", "vendor_path", "vendor_reason")

# name, HELP; all value families carry DEVICE_LABELS
_UTIL = ("krakenplug_device_util",
         "Utilization of the device's main compute engine in percent (0-100), as the vendor reports it.")
_USED = ("krakenplug_device_memory_used", "Device memory in use, in MiB (1 MiB = 1048576 bytes).")
_TOTAL = ("krakenplug_device_memory_total", "Total device memory, in MiB (1 MiB = 1048576 bytes).")
_RESERVED = ("krakenplug_device_memory_reserved",
             "Device memory the driver holds back, not counted in memory_used, in MiB; only for devices whose "
             "vendor reports it.")
_TEMPERATURE = ("krakenplug_device_temperature_celsius",
                "Device temperature in degrees Celsius; only for devices whose vendor reports it.")
_POWER = ("krakenplug_device_power_watts", "Device power draw in watts; only for devices whose vendor reports it.")
_RATIO = ("krakenplug_device_utilization_ratio", "Utilization of the device's main compute engine as a ratio (0-1).")
_USED_BYTES = ("krakenplug_device_memory_used_bytes", "Device memory in use, in bytes.")
_TOTAL_BYTES = ("krakenplug_device_memory_total_bytes", "Total device memory, in bytes.")
_RESERVED_BYTES = ("krakenplug_device_memory_reserved_bytes",
                   "Device memory the driver holds back, not counted in memory_used_bytes, in bytes.")


@dataclasses.dataclass
class Family:
    """One gauge family: name, HELP text, label names and (label values, value) samples.

    ``cache_token`` is set on families whose samples stay the same while the token is the same
    object; the renderer may then reuse its previous text for them.
    """

    name: str
    documentation: str
    labelnames: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = dataclasses.field(default_factory=list)
    cache_token: object | None = None


class _Plan:
    """Label tuples and static families for one combination of devices, pod map and driver version."""

    def __init__(self, node_name: str, devices: tuple[base.Device, ...],
                 allocations: tuple[attribution.Allocation, ...], driver_version: str, dra_driver: str) -> None:
        self.key = (devices, allocations, driver_version)
        self.info = Family("krakenplug_device_info",
                           "Facts about a device; always 1. Join on node_name, vendor and device_index.",
                           INFO_LABELS, cache_token=self)
        self.healthy = Family("krakenplug_device_healthy",
                              "1 when the device is healthy (the health the device plugin reports to the kubelet), "
                              "else 0.", HEALTH_LABELS, cache_token=self)
        self.allocations = Family("krakenplug_device_allocation_info",
                                  "One series per container using the device (kubelet PodResources); always 1.",
                                  ALLOCATION_LABELS, cache_token=self)
        self.rows: list[tuple[base.Device, tuple[str, ...]]] = []  # (device, labels of its value series)
        users = attribution.assign(allocations, devices, dra_driver=dra_driver, pool=node_name)
        for device in sorted(devices, key=lambda d: (d.index, d.id)):
            self._add_device(node_name, device, users.get(device.id), driver_version)

    def _add_device(self, node: str, device: base.Device, users: attribution.DeviceUsers | None,
                    driver_version: str) -> None:
        index, vendor = str(device.index), device.vendor
        pod, namespace, container = users.owner() if users else ("", "", "")
        self.rows.append((device, (node, vendor, index, pod, namespace, container)))
        self.info.samples.append(((node, vendor, index, device.id, device.uuid or "", device.model, driver_version,
                                   device.pci_bus_id or "", device.resource), 1.0))
        self.healthy.samples.append(((node, vendor, index), 1.0 if device.healthy else 0.0))
        for user_namespace, user_pod, user_container, resource in users.users if users else ():
            self.allocations.samples.append(
                ((node, vendor, index, user_pod, user_namespace, user_container, resource), 1.0))


class FamilyBuilder:
    """Builds the families of each scrape; thread-safe (a plan is replaced whole, never changed)."""

    def __init__(self, *, node_name: str, base_unit_metrics: bool, version: str, python_version: str,
                 dra_driver: str = "") -> None:
        self.node_name = node_name
        self.dra_driver = dra_driver  # our DRA driver's name: its devices in PodResources are ours too
        self.base_unit_metrics = base_unit_metrics
        self._plan: _Plan | None = None
        self._build_info = Family("krakenplug_exporter_build_info", "Version of the exporter and of Python; always 1.",
                                  BUILD_LABELS, [((version, python_version), 1.0)], cache_token=self)
        self._backend_info = _backend_info(None, "")  # replaced (never changed) when the backend's answer changes

    def build(self, reading: Reading, pods: attribution.PodAttribution, *, vendor: str) -> list[Family]:
        """Every family of one scrape, in a fixed order; families without samples are left out."""
        plan = self._plan_for(reading, pods)
        families: Sequence[Family] = [*self._values(plan, reading), plan.info, plan.healthy, plan.allocations,
                                      *self._meta(reading, pods, vendor)]
        return [family for family in families if family.samples]

    def _plan_for(self, reading: Reading, pods: attribution.PodAttribution) -> _Plan:
        plan = self._plan
        if plan is None or plan.key != (reading.devices, pods.allocations, reading.driver_version):
            plan = self._plan = _Plan(self.node_name, reading.devices, pods.allocations, reading.driver_version,
                                      self.dra_driver)
        return plan

    def _values(self, plan: _Plan, reading: Reading) -> list[Family]:
        util, used, total, reserved, temperature, power = (
            Family(*named, DEVICE_LABELS) for named in (_UTIL, _USED, _TOTAL, _RESERVED, _TEMPERATURE, _POWER))
        twins = [Family(*named, DEVICE_LABELS) for named in (_RATIO, _USED_BYTES, _TOTAL_BYTES, _RESERVED_BYTES)]
        samples = reading.samples
        for device, labels in plan.rows:
            sample = samples.get(device.id)
            if sample is None:  # failed or late: no value series rather than a stale or made-up one
                continue
            memory_total = _memory_total(device, sample)
            if memory_total is not None:
                total.samples.append((labels, memory_total))
            if sample.utilization_percent is not None:
                util.samples.append((labels, float(sample.utilization_percent)))
            if sample.memory_used_mb is not None:
                used.samples.append((labels, float(sample.memory_used_mb)))
            if sample.memory_reserved_mb is not None:
                reserved.samples.append((labels, float(sample.memory_reserved_mb)))
            if sample.temperature_celsius is not None:
                temperature.samples.append((labels, float(sample.temperature_celsius)))
            if sample.power_watts is not None:
                power.samples.append((labels, float(sample.power_watts)))
            if self.base_unit_metrics:
                _add_twins(twins, labels, sample, memory_total)
        return [util, used, total, reserved, temperature, power, *(twins if self.base_unit_metrics else ())]

    def _meta(self, reading: Reading, pods: attribution.PodAttribution, vendor: str) -> list[Family]:
        labels = (vendor,)
        return [
            Family("krakenplug_collector_up", "1 when every vendor read of this scrape succeeded in time, else 0.",
                   COLLECTOR_LABELS, [(labels, 1.0 if reading.complete else 0.0)]),
            Family("krakenplug_collector_duration_seconds", "Seconds spent on vendor reads for this scrape.",
                   COLLECTOR_LABELS, [(labels, reading.duration_seconds)]),
            Family("krakenplug_podresources_up", "1 when the last kubelet PodResources List call succeeded, else 0.",
                   (), [((), 1.0 if pods.up else 0.0)]),
            Family("krakenplug_podresources_last_success_timestamp_seconds",
                   "Unix time of the last successful kubelet PodResources List call; 0 when none succeeded yet.",
                   (), [((), pods.last_success_unix)]),
            self._build_info,
            self._backend_info_for(reading.library, vendor),
        ]

    def _backend_info_for(self, library: base.LibraryInfo | None, vendor: str) -> Family:
        """The backend's library, API and data path (``SupportsLibraryInfo``); no series when it says nothing."""
        family = _backend_info(library, vendor)
        if family.samples != self._backend_info.samples:  # rare; a new object is a new token for the renderer
            self._backend_info = family
        return self._backend_info


def _backend_info(library: base.LibraryInfo | None, vendor: str) -> Family:
    samples: list[tuple[tuple[str, ...], float]] = [] if library is None else [
        ((vendor, library.library or "", library.api, library.path, library.reason), 1.0)]
    family = Family("krakenplug_backend_info",
                    "The vendor library, API generation and data path the backend uses, and why; always 1.",
                    BACKEND_LABELS, samples)
    family.cache_token = family
    return family


def _memory_total(device: base.Device, sample: base.DeviceSample) -> float | None:
    """The sample's total, else the device's; None when neither knows (a device total of 0 means unknown:
    NVIDIA SoC GPUs and MIG without permission report no memory)."""
    if sample.memory_total_mb is not None:
        return float(sample.memory_total_mb)
    return float(device.memory_total_mb) if device.memory_total_mb > 0 else None


def _add_twins(twins: list[Family], labels: tuple[str, ...], sample: base.DeviceSample,
               memory_total: float | None) -> None:
    ratio, used_bytes, total_bytes, reserved_bytes = twins
    if sample.utilization_percent is not None:
        ratio.samples.append((labels, sample.utilization_percent / 100.0))
    if sample.memory_used_mb is not None:
        used_bytes.samples.append((labels, sample.memory_used_mb * MIB))
    if memory_total is not None:
        total_bytes.samples.append((labels, memory_total * MIB))
    if sample.memory_reserved_mb is not None:
        reserved_bytes.samples.append((labels, sample.memory_reserved_mb * MIB))

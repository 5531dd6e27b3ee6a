"""The metric contract: names, units, labels and HELP text, the same for every vendor.

``build()`` turns one scrape's inputs (a vendor reading, the pod map, the exporter's own state) into
plain ``Family`` values. Both exposition paths render these: the prometheus_client collector (for any
registry) and the fast text renderer behind ``/metrics``; a test keeps their bytes identical.

Units follow the product contract: utilization in percent, memory in MiB (the metric names say MB for
historical reasons; HELP says MiB). ``base_unit_metrics`` adds the Prometheus base-unit twins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from krakenplug.backends import base
from krakenplug.exporter import attribution
from krakenplug.exporter.reader import Reading

__all__ = ["Family", "ScrapeContext", "build"]

MIB = 1048576.0

DEVICE_LABELS = ("node_name", "vendor", "device_index", "pod", "namespace", "container")
INFO_LABELS = ("node_name", "vendor", "device_index", "device_id", "uuid", "model", "driver_version",
               "pci_bus_id", "resource")
HEALTH_LABELS = ("node_name", "vendor", "device_index")
ALLOCATION_LABELS = ("node_name", "vendor", "device_index", "pod", "namespace", "container", "resource")
COLLECTOR_LABELS = ("vendor",)
BUILD_LABELS = ("version", "python_version")


@dataclasses.dataclass
class Family:
    """One gauge family: name, HELP text, label names and (label values, value) samples."""

    name: str
    documentation: str
    labelnames: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ScrapeContext:
    """Everything one scrape renders."""

    node_name: str
    vendor: str  # the collector's vendor label (device vendor, or the backend name before any device)
    reading: Reading
    pods: attribution.PodAttribution
    version: str
    python_version: str
    base_unit_metrics: bool = False


def _value_families(base_units: bool) -> dict[str, Family]:
    families = {
        "util": Family("krakenplug_device_util",
                       "Utilization of the device's main compute engine in percent (0-100), as the vendor reports it.",
                       DEVICE_LABELS),
        "used": Family("krakenplug_device_memory_used", "Device memory in use, in MiB (1 MiB = 1048576 bytes).",
                       DEVICE_LABELS),
        "total": Family("krakenplug_device_memory_total", "Total device memory, in MiB (1 MiB = 1048576 bytes).",
                        DEVICE_LABELS),
        "temperature": Family("krakenplug_device_temperature_celsius",
                              "Device temperature in degrees Celsius; only for devices whose vendor reports it.",
                              DEVICE_LABELS),
        "power": Family("krakenplug_device_power_watts",
                        "Device power draw in watts; only for devices whose vendor reports it.", DEVICE_LABELS),
    }
    if base_units:
        families["ratio"] = Family("krakenplug_device_utilization_ratio",
                                   "Utilization of the device's main compute engine as a ratio (0-1).", DEVICE_LABELS)
        families["used_bytes"] = Family("krakenplug_device_memory_used_bytes", "Device memory in use, in bytes.",
                                        DEVICE_LABELS)
        families["total_bytes"] = Family("krakenplug_device_memory_total_bytes", "Total device memory, in bytes.",
                                         DEVICE_LABELS)
    return families


def _add_values(families: dict[str, Family], labels: tuple[str, ...], device: base.Device,
                sample: base.DeviceSample) -> None:
    total = sample.memory_total_mb if sample.memory_total_mb is not None else float(device.memory_total_mb)
    readings = {
        "util": sample.utilization_percent, "used": sample.memory_used_mb, "total": total,
        "temperature": sample.temperature_celsius, "power": sample.power_watts,
        "ratio": None if sample.utilization_percent is None else sample.utilization_percent / 100.0,
        "used_bytes": None if sample.memory_used_mb is None else sample.memory_used_mb * MIB,
        "total_bytes": total * MIB,
    }
    for key, family in families.items():
        value = readings[key]
        if value is not None:
            family.samples.append((labels, float(value)))


def device_families(context: ScrapeContext) -> list[Family]:
    """Value, info, health and allocation series of every device in the reading."""
    reading, node = context.reading, context.node_name
    values = _value_families(context.base_unit_metrics)
    info = Family("krakenplug_device_info",
                  "Facts about a device; always 1. Join on node_name, vendor and device_index.", INFO_LABELS)
    healthy = Family("krakenplug_device_healthy",
                     "1 when the device is healthy (the health the device plugin reports to the kubelet), else 0.",
                     HEALTH_LABELS)
    allocations = Family("krakenplug_device_allocation_info",
                         "One series per container using the device (kubelet PodResources); always 1.",
                         ALLOCATION_LABELS)
    users = attribution.assign(context.pods.allocations, reading.devices)
    for device in sorted(reading.devices, key=lambda d: (d.index, d.id)):
        index = str(device.index)
        device_users = users.get(device.id)
        pod, namespace, container = device_users.owner() if device_users else ("", "", "")
        sample = reading.samples.get(device.id)
        if sample is not None:
            _add_values(values, (node, device.vendor, index, pod, namespace, container), device, sample)
        info.samples.append(((node, device.vendor, index, device.id, device.uuid or "", device.model,
                              reading.driver_version, device.pci_bus_id or "", device.resource), 1.0))
        healthy.samples.append(((node, device.vendor, index), 1.0 if device.healthy else 0.0))
        for user_namespace, user_pod, user_container, resource in device_users.users if device_users else ():
            allocations.samples.append(
                ((node, device.vendor, index, user_pod, user_namespace, user_container, resource), 1.0))
    return [*values.values(), info, healthy, allocations]


def meta_families(context: ScrapeContext) -> list[Family]:
    """The exporter's own state: backend success and duration, pod map freshness, build info."""
    vendor = (context.vendor,)
    return [
        Family("krakenplug_collector_up", "1 when every vendor read of this scrape succeeded in time, else 0.",
               COLLECTOR_LABELS, [(vendor, 1.0 if context.reading.complete else 0.0)]),
        Family("krakenplug_collector_duration_seconds", "Seconds spent on vendor reads for this scrape.",
               COLLECTOR_LABELS, [(vendor, context.reading.duration_seconds)]),
        Family("krakenplug_podresources_up", "1 when the last kubelet PodResources List call succeeded, else 0.",
               (), [((), 1.0 if context.pods.up else 0.0)]),
        Family("krakenplug_podresources_last_success_timestamp_seconds",
               "Unix time of the last successful kubelet PodResources List call; 0 when none succeeded yet.",
               (), [((), context.pods.last_success_unix)]),
        Family("krakenplug_exporter_build_info", "Version of the exporter and of Python; always 1.",
               BUILD_LABELS, [((context.version, context.python_version), 1.0)]),
    ]


def build(context: ScrapeContext) -> list[Family]:
    """Every family of one scrape, in a fixed order; families without samples are left out."""
    families: Sequence[Family] = [*device_families(context), *meta_families(context)]
    return [family for family in families if family.samples]

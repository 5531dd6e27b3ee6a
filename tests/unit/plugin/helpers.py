"""Device and inventory builders shared by the table-driven plugin tests."""

from __future__ import annotations

from krakenplug.backends import base
from krakenplug.plugin import inventory

RESOURCE = "example.com/accel"


def device(device_id: str, *, numa: int | None = 0, healthy: bool = True, index: int = 0,
           reason: str = "") -> base.Device:
    return base.Device(id=device_id, index=index, vendor="fake", model="KrakenSim-80G", memory_total_mb=1024,
                       resource=RESOURCE, numa_node=numa,
                       health=base.Health.HEALTHY if healthy else base.Health.UNHEALTHY, health_reason=reason)


def inventory_of(*devices: base.Device, replicas: int = 1) -> inventory.Inventory:
    return inventory.Inventory.build(RESOURCE, devices, replicas=replicas)


def numa_layout(layout: dict[int | None, int], *, unhealthy: tuple[str, ...] = ()) -> list[base.Device]:
    """Devices d<node>-<k>: ``{0: 2, 1: 3}`` is two devices on NUMA node 0 and three on node 1."""
    devices = []
    for node, count in layout.items():
        for k in range(count):
            name = f"d{'x' if node is None else node}-{k}"
            devices.append(device(name, numa=node, healthy=name not in unhealthy, index=len(devices)))
    return devices

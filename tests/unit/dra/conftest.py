"""Fixtures for DRA tests: the resource.k8s.io stand-in, the kubelet stand-in, the driver on a fake backend."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from krakenplug import dra, settings
from krakenplug.backends import fake
from krakenplug.testing.dra_api import ResourceApiServer
from krakenplug.testing.dra_kubelet import DraKubelet

NODE = "node-a"
DRIVER = "fake.krakenplug.pcl.ac.cn"


def device_specs(count: int, **overrides: Any) -> list[dict[str, Any]]:
    return [{"id": f"fake-{i}", "model": "KrakenSim-80G", "memory_mb": 81920, "numa_node": i % 2,
             "pci_bus_id": f"0000:{0x3b + i:02x}:00.0", **overrides} for i in range(count)]


class Devices:
    """The fake backend's devices file, replaced atomically on every edit."""

    def __init__(self, path: Path, specs: list[dict[str, Any]]) -> None:
        self.path = path
        self.write(specs)

    def write(self, specs: list[dict[str, Any]]) -> None:
        self.specs = specs
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(yaml.safe_dump({"devices": specs}))
        os.replace(temporary, self.path)

    def set_health(self, device_id: str, health: str, reason: str = "") -> None:
        self.write([{**spec, "health": health, "health_reason": reason} if spec["id"] == device_id else spec
                    for spec in self.specs])


@dataclasses.dataclass
class Node:
    root: Path
    api: ResourceApiServer
    kubelet: DraKubelet
    devices: Devices
    kubeconfig: Path

    @property
    def cdi_dir(self) -> Path:
        return self.root / "cdi"

    @property
    def plugin_dir(self) -> Path:
        return self.root / "plugins" / DRIVER

    def settings(self, **dra_fields: Any) -> settings.Settings:
        fields = {"allocation_mode": "dra", "registry_dir": str(self.root / "registry"),
                  "plugins_dir": str(self.root / "plugins"), "kubeconfig": str(self.kubeconfig),
                  "retry_initial_seconds": 0.05, "retry_max_seconds": 0.2, "api_timeout_seconds": 2,
                  "sysfs_root": str(self.root / "sys"), **dra_fields}
        return settings.load(overrides={"node_name": NODE, "backend": "fake", "cdi_dir": str(self.cdi_dir),
                                        "dra": fields})


@pytest.fixture
def node(short_tmp: Path, clean_env: None) -> Iterator[Node]:
    with ResourceApiServer() as api:
        kubelet = DraKubelet(short_tmp / "registry", health_retry_seconds=0.1)
        kubelet.start()
        try:
            yield Node(short_tmp, api, kubelet, Devices(short_tmp / "devices.yaml", device_specs(4)),
                       api.write_kubeconfig(short_tmp / "kubeconfig"))
        finally:
            kubelet.stop()


@pytest.fixture
def run_driver(run_component: Callable[..., threading.Event]) -> Callable[..., threading.Event]:
    """Starts ``dra.run`` on a hub over the fake backend; every run is stopped and joined at teardown."""
    def start(node: Node, **dra_fields: Any) -> threading.Event:
        backend = fake.FakeBackend(fake.FakeOptions(devices_file=node.devices.path, watch_interval_seconds=0.02))
        backend.open()
        return run_component(dra.run, node.settings(**dra_fields), backend, poll_seconds=0.05,
                             name="dra-under-test")

    return start


@pytest.fixture
def node_with_driver(node: Node, run_driver: Any) -> Node:
    """A node whose driver is registered and has published its devices."""
    run_driver(node)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
    node.kubelet.wait_for(lambda k: DRIVER in k.drivers)
    return node

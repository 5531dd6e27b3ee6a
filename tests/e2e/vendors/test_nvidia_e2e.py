"""``krakenplug run --backend nvidia`` on a fake NVML, through registration, Allocate and XID health."""

from __future__ import annotations

from pathlib import Path

import pytest
from vendors import WAIT, Fixture, backend_flags, compile_fake_library, container_devices, make_dev_tree, make_pci_device

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/nvidia"
UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-000000000000"


@pytest.fixture(scope="module")
def libnvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_fake_library("fake_nvml.c", "libnvidia-ml.so.1", tmp_path_factory.mktemp("nvml"))


@pytest.fixture
def gpus(node, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    make_dev_tree(node.root / "hostdev", ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"])
    make_pci_device(node.root / "hostsys", "0000:3b:00.0", numa_node=0)
    make_pci_device(node.root / "hostsys", "0000:d8:00.0", numa_node=1)
    fixture = Fixture(node.root / "nvml.fixture", {
        "count": 2, "dev0.uuid": UUID0, "dev0.bus_id": "0000:3b:00.0", "dev0.name": "NVIDIA H100 80GB HBM3",
        "dev1.uuid": UUID1, "dev1.bus_id": "0000:d8:00.0", "dev1.name": "NVIDIA H100 80GB HBM3"})
    monkeypatch.setenv("FAKE_NVML_FIXTURE", str(fixture.path))
    return fixture


def test_registers_allocates_and_follows_xid_health(kubelet, node, start_agent, libnvml: Path,
                                                    gpus: Fixture) -> None:
    start_agent(*backend_flags("nvidia", node.root, library_path=libnvml, health_poll_interval_seconds=0.5))
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert state.devices[UUID0].numa_nodes == (0,) and state.devices[UUID1].numa_nodes == (1,)

    response = kubelet.allocate(RESOURCE, 1, pod="p")
    (container,) = response.container_responses
    (uuid,) = container.envs["NVIDIA_VISIBLE_DEVICES"].split(",")
    minor = [UUID0, UUID1].index(uuid)
    hostdev = node.root / "hostdev"
    assert container_devices(response) == [(str(hostdev / name), f"/dev/{name}") for name in
                                           (f"nvidia{minor}", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")]

    gpus.update({"event.1": "1:8:79"})  # a fatal XID on GPU 1
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=1, timeout=WAIT)
    assert state.devices[UUID1].health == "Unhealthy"
    kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)  # recovered

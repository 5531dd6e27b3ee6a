"""``krakenplug run --backend cambricon`` on a fake CNDev, through registration, Allocate and health polling."""

from __future__ import annotations

from pathlib import Path

import pytest
from vendors import WAIT, Fixture, backend_flags, compile_fake_library, container_devices, make_dev_tree, make_pci_device

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/cambricon"
UUID0 = "aaaaaaaa-0000-4000-8000-000000000000"
UUID1 = "bbbbbbbb-1111-4111-8111-111111111111"


@pytest.fixture(scope="module")
def libcndev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_fake_library("fake_cndev.c", "libcndev.so", tmp_path_factory.mktemp("cndev"))


@pytest.fixture
def mlus(node, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    make_dev_tree(node.root / "hostdev", ["cambricon_dev0", "cambricon_ipcm0", "cambricon_dev1", "cambricon_ipcm1",
                                          "cambricon_ctl"])
    make_pci_device(node.root / "hostsys", "0000:39:00.0", numa_node=0)
    make_pci_device(node.root / "hostsys", "0000:3d:00.0", numa_node=0)
    fixture = Fixture(node.root / "cndev.fixture", {
        "count": 2, "dev0.uuid": UUID0, "dev0.bus_id": "0000:39:00.0", "dev1.uuid": UUID1, "dev1.bus_id": "0000:3d:00.0"})
    monkeypatch.setenv("FAKE_CNDEV_FIXTURE", str(fixture.path))
    return fixture


def test_registers_allocates_and_follows_health(kubelet, node, start_agent, libcndev: Path, mlus: Fixture) -> None:
    start_agent(*backend_flags("cambricon", node.root, library_path=libcndev, health_poll_interval_seconds=0.2))
    kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)

    response = kubelet.allocate(RESOURCE, 1, pod="p", ids=[f"MLU-{UUID1}"])
    (container,) = response.container_responses
    assert container.envs["CAMBRICON_VISIBLE_DEVICES"] == "1"
    hostdev = node.root / "hostdev"
    assert container_devices(response) == [(str(hostdev / name), f"/dev/{name}")
                                           for name in ("cambricon_dev1", "cambricon_ipcm1", "cambricon_ctl")]

    mlus.update({"dev0.health": 0})
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=1, timeout=WAIT)
    assert state.devices[f"MLU-{UUID0}"].health == "Unhealthy"
    mlus.update({"dev0.health": 1})
    kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)

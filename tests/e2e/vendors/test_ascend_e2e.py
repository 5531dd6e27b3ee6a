"""``krakenplug run --backend ascend`` on a fake DCMI, through registration, Allocate and health polling."""

from __future__ import annotations

from pathlib import Path

import pytest
from vendors import WAIT, Fixture, backend_flags, compile_fake_library, container_devices, make_dev_tree, make_pci_device

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/ascend"


@pytest.fixture(scope="module")
def libdcmi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_fake_library("fake_dcmi.c", "libdcmi.so", tmp_path_factory.mktemp("dcmi"))


@pytest.fixture
def npus(node, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    make_dev_tree(node.root / "hostdev", ["davinci2", "davinci3", "davinci_manager", "devmm_svm", "hisi_hdc"])
    make_pci_device(node.root / "hostsys", "0000:c1:00.0", numa_node=0)
    make_pci_device(node.root / "hostsys", "0000:c2:00.0", numa_node=1)
    fixture = Fixture(node.root / "dcmi.fixture", {
        "count": 2, "dev0.phy_id": 2, "dev0.bus_id": "0000:c1:00.0", "dev1.phy_id": 3, "dev1.bus_id": "0000:c2:00.0"})
    monkeypatch.setenv("FAKE_DCMI_FIXTURE", str(fixture.path))
    return fixture


def test_registers_allocates_and_follows_health(kubelet, node, start_agent, libdcmi: Path, npus: Fixture) -> None:
    start_agent(*backend_flags("ascend", node.root, library_path=libdcmi, health_poll_interval_seconds=0.2))
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert sorted(state.devices) == ["Ascend-2", "Ascend-3"]

    response = kubelet.allocate(RESOURCE, 2, pod="p")
    (container,) = response.container_responses
    assert sorted(container.envs["ASCEND_VISIBLE_DEVICES"].split(",")) == ["2", "3"]
    hostdev = node.root / "hostdev"
    assert sorted(container_devices(response)) == sorted(
        (str(hostdev / name), f"/dev/{name}")
        for name in ("davinci2", "davinci3", "davinci_manager", "devmm_svm", "hisi_hdc"))

    npus.update({"dev1.health": 2, "dev1.errors": "80E01801"})
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=1, timeout=WAIT)
    assert state.devices["Ascend-3"].health == "Unhealthy"
    npus.update({"dev1.health": 0})
    kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)

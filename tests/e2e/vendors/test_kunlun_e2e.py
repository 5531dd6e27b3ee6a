"""``krakenplug run --backend kunlun`` on a fake XPUML: registration, Allocate, health, and an SR-IOV label
that is rejected with an Event on the node (through a Kubernetes API stand-in)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from vendors import (
    WAIT,
    Fixture,
    KubeApiStandIn,
    backend_flags,
    compile_fake_library,
    container_devices,
    make_dev_tree,
    make_pci_device,
)

pytestmark = pytest.mark.e2e

RESOURCE = "baidu.com/xpu"
BUS0, BUS1 = "0000:3b:00.0", "0000:86:00.0"


@pytest.fixture(scope="module")
def libxpuml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_fake_library("fake_xpuml.c", "libxpuml.so.1", tmp_path_factory.mktemp("xpuml"))


@pytest.fixture
def xpus(node, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    make_dev_tree(node.root / "hostdev", ["xpu0", "xpu1", "xpuctrl"])
    make_pci_device(node.root / "hostsys", BUS0, vendor=0x1D22, device=0x3684, numa_node=0, total_vfs=3)
    make_pci_device(node.root / "hostsys", BUS1, vendor=0x1D22, device=0x3684, numa_node=1)
    fixture = Fixture(node.root / "xpuml.fixture", {
        "count": 2, "dev0.serial": "XPU-SN-0", "dev0.bus_id": BUS0, "dev0.name": "R200",
        "dev1.serial": "XPU-SN-1", "dev1.bus_id": BUS1, "dev1.name": "R200"})
    monkeypatch.setenv("FAKE_XPUML_FIXTURE", str(fixture.path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return fixture


def test_registers_allocates_and_follows_health(kubelet, node, start_agent, libxpuml: Path, xpus: Fixture) -> None:
    start_agent(*backend_flags("kunlun", node.root, library_path=libxpuml, health_poll_interval_seconds=0.2))
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert sorted(state.devices) == ["XPU-SN-0", "XPU-SN-1"]

    response = kubelet.allocate(RESOURCE, 1, pod="p", ids=["XPU-SN-1"])
    (container,) = response.container_responses
    assert container.envs["XPU_VISIBLE_DEVICES"] == "1"
    hostdev = node.root / "hostdev"
    assert container_devices(response) == [(str(hostdev / "xpu1"), "/dev/xpu1"),
                                           (str(hostdev / "xpuctrl"), "/dev/xpuctrl")]

    xpus.update({"dev0.state": 207})
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=1, timeout=WAIT)
    assert state.devices["XPU-SN-0"].health == "Unhealthy"
    xpus.update({"dev0.state": 201})
    kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)


def test_a_bad_sriov_label_is_rejected_with_a_node_event(kubelet, node, start_agent, libxpuml: Path,
                                                        xpus: Fixture) -> None:
    api = KubeApiStandIn("e2e-node", {"baidu.com/sriov-num-vfs": "four"}).start()
    try:
        kubeconfig = api.write_kubeconfig(node.root / "kubeconfig")
        start_agent(*backend_flags("kunlun", node.root, library_path=libxpuml, kubeconfig=kubeconfig,
                                   pod_resources_socket=node.pod_resources_socket))
        kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while "SriovConfigRejected" not in api.event_reasons() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        api.stop()

    (event,) = [event for event in api.events if event["reason"] == "SriovConfigRejected"]
    assert "node label baidu.com/sriov-num-vfs" in event["message"] and "'four'" in event["message"]
    assert (node.root / "hostsys" / "bus" / "pci" / "devices" / BUS0 / "sriov_numvfs").read_text() == "0\n"

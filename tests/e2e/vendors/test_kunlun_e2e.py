"""``krakenplug run --backend kunlun`` on a fake XPUML: registration, Allocate, health, and an SR-IOV label
that is rejected with an Event on the node (through a Kubernetes API stand-in)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from vendors import (
    WAIT,
    XPUML,
    FakeHost,
    Fixture,
    KubeApiStandIn,
    backend_flags,
    container_devices,
    expect_health_round_trip,
    fake_host,
    fixture_values,
    make_pci_device,
)

pytestmark = pytest.mark.e2e

RESOURCE = "baidu.com/xpu"
BUS0, BUS1 = "0000:3b:00.0", "0000:86:00.0"


@pytest.fixture(scope="module")
def libxpuml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return XPUML.build(tmp_path_factory.mktemp("xpuml"))


@pytest.fixture
def host(node) -> FakeHost:
    host = fake_host(node.root, ["xpu0", "xpu1", "xpuctrl"], {BUS0: 0, BUS1: 1}, vendor=0x1D22, device=0x3684)
    make_pci_device(host.sysfs, BUS0, vendor=0x1D22, device=0x3684, numa_node=0, total_vfs=3)  # an SR-IOV PF
    return host


@pytest.fixture
def xpus(node, host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return XPUML.fixture(node.root / "xpuml.fixture", fixture_values([
        {"serial": "XPU-SN-0", "bus_id": BUS0, "name": "R200"},
        {"serial": "XPU-SN-1", "bus_id": BUS1, "name": "R200"}]), monkeypatch)


def test_registers_allocates_and_follows_health(kubelet, start_agent, libxpuml: Path, host: FakeHost,
                                                xpus: Fixture) -> None:
    start_agent(*backend_flags("kunlun", host, library_path=libxpuml, health_poll_interval_seconds=0.2))
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert sorted(state.devices) == ["XPU-SN-0", "XPU-SN-1"]

    response = kubelet.allocate(RESOURCE, 1, pod="p", ids=["XPU-SN-1"])
    (container,) = response.container_responses
    assert container.envs["XPU_VISIBLE_DEVICES"] == "1"
    assert container_devices(response) == host.node_paths("xpu1", "xpuctrl")

    expect_health_round_trip(kubelet, RESOURCE, xpus, "XPU-SN-0", sick={"dev0.state": 207},
                             healthy={"dev0.state": 201})


def test_a_bad_sriov_label_is_rejected_with_a_node_event(kubelet, node, start_agent, libxpuml: Path,
                                                        host: FakeHost, xpus: Fixture) -> None:
    api = KubeApiStandIn("e2e-node", {"baidu.com/sriov-num-vfs": "four"}).start()
    try:
        kubeconfig = api.write_kubeconfig(node.root / "kubeconfig")
        start_agent(*backend_flags("kunlun", host, library_path=libxpuml, kubeconfig=kubeconfig,
                                   pod_resources_socket=node.pod_resources_socket))
        kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while "SriovConfigRejected" not in api.event_reasons() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        api.stop()

    (event,) = [event for event in api.events if event["reason"] == "SriovConfigRejected"]
    assert "node label baidu.com/sriov-num-vfs" in event["message"] and "'four'" in event["message"]
    assert (host.sysfs / "bus" / "pci" / "devices" / BUS0 / "sriov_numvfs").read_text() == "0\n"

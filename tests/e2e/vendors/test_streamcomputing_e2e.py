"""``krakenplug run --backend streamcomputing`` on a fake STCML and stc-smi: registration, Allocate of one
NPU with its cluster nodes and the HPE mount, the one-NPU-per-container rule, and health."""

from __future__ import annotations

from pathlib import Path

import pytest
from vendors import (
    FAKE_STC_SMI,
    WAIT,
    Fixture,
    backend_flags,
    compile_fake_library,
    container_devices,
    make_dev_tree,
    make_pci_device,
)

from krakenplug.testing.errors import AdmissionError

pytestmark = pytest.mark.e2e

RESOURCE = "streamcomputing.com/npu"
BUS0, BUS1 = "0000:03:00.0", "0000:65:00.0"


@pytest.fixture(scope="module")
def libstcml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_fake_library("fake_stcml.c", "libstcml.so", tmp_path_factory.mktemp("stcml"))


@pytest.fixture
def npus(node, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    make_dev_tree(node.root / "hostdev", ["stc0", "stc0c0", "stc0c1", "stc0c2", "stc0c3", "stc0ctrl",
                                          "stc1", "stc1c0", "stc1c1", "stc1c2", "stc1c3", "stc1ctrl"])
    make_pci_device(node.root / "hostsys", BUS0, vendor=0x23E2, device=0x0100, numa_node=0)
    make_pci_device(node.root / "hostsys", BUS1, vendor=0x23E2, device=0x0100, numa_node=1)
    fixture = Fixture(node.root / "stcml.fixture", {"count": 2, "dev0.bus_id": BUS0, "dev1.bus_id": BUS1})
    monkeypatch.setenv("FAKE_STCML_FIXTURE", str(fixture.path))
    monkeypatch.delenv("FAKE_STC_SMI_OUTPUT", raising=False)  # stc-smi prints nothing: usage metrics absent
    return fixture


def test_registers_allocates_one_npu_and_follows_health(kubelet, node, start_agent, libstcml: Path,
                                                        npus: Fixture) -> None:
    hpe = node.root / "hpe"
    start_agent(*backend_flags("streamcomputing", node.root, library_path=libstcml, smi_path=FAKE_STC_SMI,
                               hpe_root=hpe, health_poll_interval_seconds=0.2))
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert sorted(state.devices) == [BUS0, BUS1]

    with pytest.raises(AdmissionError, match="at most 1"):
        kubelet.allocate(RESOURCE, 2, pod="greedy")

    response = kubelet.allocate(RESOURCE, 1, pod="p", ids=[BUS1])
    (container,) = response.container_responses
    assert dict(container.envs) == {"STC_VISIBLE_DEVICES": "1"}
    hostdev = node.root / "hostdev"
    assert container_devices(response) == [(str(hostdev / name), f"/dev/{name}")
                                           for name in ("stc1", "stc1c0", "stc1c1", "stc1c2", "stc1c3", "stc1ctrl")]
    assert [(m.host_path, m.container_path, m.read_only) for m in container.mounts] == [(str(hpe), str(hpe), True)]

    npus.update({"dev0.board": 1})
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=1, timeout=WAIT)
    assert state.devices[BUS0].health == "Unhealthy"
    npus.update({"dev0.board": 0})
    kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)

"""``krakenplug run --backend ascend`` on a fake DCMI, through registration, Allocate and health polling."""

from __future__ import annotations

from pathlib import Path

import pytest
from vendors import DCMI, WAIT, backend_flags, container_devices, expect_health_round_trip, fake_host, fixture_values

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/ascend"


@pytest.fixture(scope="module")
def libdcmi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return DCMI.build(tmp_path_factory.mktemp("dcmi"))


def test_registers_allocates_and_follows_health(kubelet, node, start_agent, libdcmi: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = ("davinci2", "davinci3", "davinci_manager", "devmm_svm", "hisi_hdc")
    host = fake_host(node.root, nodes, {"0000:c1:00.0": 0, "0000:c2:00.0": 1})
    npus = DCMI.fixture(node.root / "dcmi.fixture", fixture_values([
        {"phy_id": 2, "bus_id": "0000:c1:00.0"}, {"phy_id": 3, "bus_id": "0000:c2:00.0"}]), monkeypatch)
    start_agent(*backend_flags("ascend", host, library_path=libdcmi, health_poll_interval_seconds=0.2))
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert sorted(state.devices) == ["Ascend-2", "Ascend-3"]

    response = kubelet.allocate(RESOURCE, 2, pod="p")
    (container,) = response.container_responses
    assert sorted(container.envs["ASCEND_VISIBLE_DEVICES"].split(",")) == ["2", "3"]
    assert sorted(container_devices(response)) == sorted(host.node_paths(*nodes))

    expect_health_round_trip(kubelet, RESOURCE, npus, "Ascend-3", sick={"dev1.health": 2, "dev1.errors": "80E01801"},
                             healthy={"dev1.health": 0})

"""``krakenplug run --backend cambricon`` on a fake CNDev, through registration, Allocate and health polling."""

from __future__ import annotations

from pathlib import Path

import pytest
from vendors import CNDEV, WAIT, backend_flags, container_devices, expect_health_round_trip, fake_host, fixture_values

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/cambricon"
UUID0 = "aaaaaaaa-0000-4000-8000-000000000000"
UUID1 = "bbbbbbbb-1111-4111-8111-111111111111"


@pytest.fixture(scope="module")
def libcndev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return CNDEV.build(tmp_path_factory.mktemp("cndev"))


def test_registers_allocates_and_follows_health(kubelet, node, start_agent, libcndev: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    host = fake_host(node.root, ["cambricon_dev0", "cambricon_ipcm0", "cambricon_dev1", "cambricon_ipcm1",
                                 "cambricon_ctl"], {"0000:39:00.0": 0, "0000:3d:00.0": 0})
    mlus = CNDEV.fixture(node.root / "cndev.fixture", fixture_values([
        {"uuid": UUID0, "bus_id": "0000:39:00.0"}, {"uuid": UUID1, "bus_id": "0000:3d:00.0"}]), monkeypatch)
    start_agent(*backend_flags("cambricon", host, library_path=libcndev, health_poll_interval_seconds=0.2))
    kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)

    response = kubelet.allocate(RESOURCE, 1, pod="p", ids=[f"MLU-{UUID1}"])
    (container,) = response.container_responses
    assert container.envs["CAMBRICON_VISIBLE_DEVICES"] == "1"
    assert container_devices(response) == host.node_paths("cambricon_dev1", "cambricon_ipcm1", "cambricon_ctl")

    expect_health_round_trip(kubelet, RESOURCE, mlus, f"MLU-{UUID0}", sick={"dev0.health": 0},
                             healthy={"dev0.health": 1})

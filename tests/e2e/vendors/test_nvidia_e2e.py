"""``krakenplug run --backend nvidia`` on a fake NVML, through registration, Allocate and XID health."""

from __future__ import annotations

from pathlib import Path

import pytest
from vendors import NVML, WAIT, backend_flags, container_devices, expect_health_round_trip, fake_host, fixture_values

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/nvidia"
UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-000000000000"


@pytest.fixture(scope="module")
def libnvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return NVML.build(tmp_path_factory.mktemp("nvml"))


def test_registers_allocates_and_follows_xid_health(kubelet, node, start_agent, libnvml: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    host = fake_host(node.root, ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"],
                     {"0000:3b:00.0": 0, "0000:d8:00.0": 1})
    gpus = NVML.fixture(node.root / "nvml.fixture", fixture_values([
        {"uuid": UUID0, "bus_id": "0000:3b:00.0", "name": "NVIDIA H100 80GB HBM3"},
        {"uuid": UUID1, "bus_id": "0000:d8:00.0", "name": "NVIDIA H100 80GB HBM3"}]), monkeypatch)
    start_agent(*backend_flags("nvidia", host, library_path=libnvml, health_poll_interval_seconds=0.5))
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert state.devices[UUID0].numa_nodes == (0,) and state.devices[UUID1].numa_nodes == (1,)

    response = kubelet.allocate(RESOURCE, 1, pod="p")
    (container,) = response.container_responses
    (uuid,) = container.envs["NVIDIA_VISIBLE_DEVICES"].split(",")
    minor = [UUID0, UUID1].index(uuid)
    assert container_devices(response) == host.node_paths(f"nvidia{minor}", "nvidiactl", "nvidia-uvm",
                                                          "nvidia-uvm-tools")

    # A fatal XID on GPU 1; the backend recovers it by itself once its queries answer for an interval.
    expect_health_round_trip(kubelet, RESOURCE, gpus, UUID1, sick={"event.1": "1:8:79"}, healthy=None)

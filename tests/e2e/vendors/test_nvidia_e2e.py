"""``krakenplug run --backend nvidia`` on a fake NVML, through registration, Allocate and XID health,
with MIG strategies none, single and mixed."""

from __future__ import annotations

from pathlib import Path

import pytest
from vendors import NVML, WAIT, _load, backend_flags, container_devices, expect_health_round_trip, fake_host, \
    fixture_values

pytestmark = pytest.mark.e2e
fakenvml = _load("fakenvml")

RESOURCE = "krakenplug.pcl.ac.cn/nvidia"
UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-000000000000"
MIG_A, MIG_B, MIG_C = (f"MIG-aaaaaaaa-0000-5000-8000-00000000000{i}" for i in range(1, 4))
DEVICE_NODES = ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"]


@pytest.fixture(scope="module")
def libnvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return NVML.build(tmp_path_factory.mktemp("nvml"))


def test_registers_allocates_and_follows_xid_health(kubelet, node, start_agent, libnvml: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    host = fake_host(node.root, DEVICE_NODES, {"0000:3b:00.0": 0, "0000:d8:00.0": 1})
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


def mig_node(node, monkeypatch: pytest.MonkeyPatch, gpu1: dict[str, object]):
    """GPU 0 MIG-enabled with a 3g.40gb (GI 1) and a 1g.10gb (GI 9); GPU 1 as ``gpu1`` says."""
    host = fake_host(node.root, DEVICE_NODES, {"0000:3b:00.0": 0, "0000:d8:00.0": 1})
    proc = node.root / "proc"
    fakenvml.add_mig_capabilities(host.dev, proc, 0, 1, 0, (12, 13))
    fakenvml.add_mig_capabilities(host.dev, proc, 0, 9, 0, (84, 85))
    fakenvml.add_mig_capabilities(host.dev, proc, 1, 1, 0, (30, 31))
    gpu0 = fakenvml.mig_fields((0, MIG_A, 1, 0, fakenvml.PROFILE_3G), (1, MIG_B, 9, 0, fakenvml.PROFILE_1G))
    gpus = NVML.fixture(node.root / "nvml.fixture", fixture_values([
        fakenvml.h100(UUID0, "0000:3b:00.0", 0, **gpu0), fakenvml.h100(UUID1, "0000:d8:00.0", 1, **gpu1)]),
        monkeypatch)
    return host, proc, gpus


def test_mig_strategy_none_advertises_gpus_whole(kubelet, node, start_agent, libnvml: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    host, proc, _ = mig_node(node, monkeypatch, {"mig_mode": 0})
    start_agent(*backend_flags("nvidia", host, library_path=libnvml, proc_root=proc, mig_strategy="none"))
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert set(state.devices) == {UUID0, UUID1}


def test_mig_strategy_single_advertises_mig_devices_under_the_vendor_resource(
        kubelet, node, start_agent, libnvml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both GPUs hold 3g.40gb devices only.
    host, proc, gpus = mig_node(node, monkeypatch, fakenvml.mig_fields((0, MIG_C, 1, 0, fakenvml.PROFILE_3G)))
    gpus.update({"dev0.mig1.gi_slices": 3, "dev0.mig1.ci_slices": 3, "dev0.mig1.memory_mb": 40448})
    start_agent(*backend_flags("nvidia", host, library_path=libnvml, proc_root=proc, mig_strategy="single"))
    state = kubelet.wait_for_resource(RESOURCE, capacity=3, allocatable=3, timeout=WAIT)
    assert set(state.devices) == {MIG_A, MIG_B, MIG_C}
    response = kubelet.allocate(RESOURCE, ids=[MIG_C], pod="p")
    assert container_devices(response)[:3] == host.node_paths(
        "nvidia1", "nvidia-caps/nvidia-cap30", "nvidia-caps/nvidia-cap31")


def test_mig_strategy_mixed_one_resource_per_profile_with_mig_xid_health(
        kubelet, node, start_agent, libnvml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host, proc, gpus = mig_node(node, monkeypatch, {"mig_mode": 0})
    start_agent(*backend_flags("nvidia", host, library_path=libnvml, proc_root=proc, mig_strategy="mixed",
                               health_poll_interval_seconds=0.5))
    big, small = f"{RESOURCE}-mig-3g.40gb", f"{RESOURCE}-mig-1g.10gb"
    assert set(kubelet.wait_for_resource(RESOURCE, capacity=1, allocatable=1, timeout=WAIT).devices) == {UUID1}
    assert set(kubelet.wait_for_resource(small, capacity=1, allocatable=1, timeout=WAIT).devices) == {MIG_B}
    assert set(kubelet.wait_for_resource(big, capacity=1, allocatable=1, timeout=WAIT).devices) == {MIG_A}

    response = kubelet.allocate(big, 1, pod="p")
    (container,) = response.container_responses
    assert container.envs["NVIDIA_VISIBLE_DEVICES"] == MIG_A
    assert container_devices(response) == host.node_paths(
        "nvidia0", "nvidia-caps/nvidia-cap12", "nvidia-caps/nvidia-cap13", "nvidiactl", "nvidia-uvm",
        "nvidia-uvm-tools")

    # An XID in GPU instance 9 / compute instance 0 is MIG_B's: only the 1g.10gb resource loses a device.
    gpus.update({"event.1": "0:8:94:9:0"})
    kubelet.wait_for_resource(small, capacity=1, allocatable=0, timeout=WAIT)
    assert kubelet.wait_for_resource(big, capacity=1, timeout=WAIT).allocatable == 1
    kubelet.wait_for_resource(small, capacity=1, allocatable=1, timeout=WAIT)  # recovered by itself


def test_preferred_allocation_follows_nvlink_through_the_plugin(kubelet, node, start_agent, libnvml: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # GPUs 0, 1 on NUMA node 0 and 2, 3 on node 1; NVLink bridges join 0-2 and 1-3 (across the nodes).
    bus = [f"0000:{0x18 + i:02x}:00.0" for i in range(4)]
    host = fake_host(node.root, [f"nvidia{i}" for i in range(4)], {bus[i]: i // 2 for i in range(4)})
    uuids = [f"GPU-0000000{i}-0000-4000-8000-000000000000" for i in range(4)]
    links = ["2,2", "3", "0,0", "1"]
    NVML.fixture(node.root / "nvml.fixture", fixture_values([
        {"uuid": uuids[i], "bus_id": bus[i], "minor": i, "nvlinks": links[i]} for i in range(4)]), monkeypatch)
    start_agent(*backend_flags("nvidia", host, library_path=libnvml))
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    (container,) = kubelet.allocate(RESOURCE, 2, pod="p").container_responses
    assert sorted(container.envs["NVIDIA_VISIBLE_DEVICES"].split(",")) in ([uuids[0], uuids[2]], [uuids[1], uuids[3]])

"""``krakenplug run --backend streamcomputing`` on a fake STCML and stc-smi: registration, Allocate of one
NPU with its cluster nodes and the HPE mount, the one-NPU-per-container rule, and health."""

from __future__ import annotations

from pathlib import Path

import pytest
from vendors import (
    FAKE_STC_SMI,
    STCML,
    WAIT,
    backend_flags,
    container_devices,
    expect_health_round_trip,
    fake_host,
    fixture_values,
)

from krakenplug.testing.errors import AdmissionError

pytestmark = pytest.mark.e2e

RESOURCE = "streamcomputing.com/npu"
BUS0, BUS1 = "0000:03:00.0", "0000:65:00.0"


@pytest.fixture(scope="module")
def libstcml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return STCML.build(tmp_path_factory.mktemp("stcml"))


def test_registers_allocates_one_npu_and_follows_health(kubelet, node, start_agent, libstcml: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    npu1_nodes = ("stc1", "stc1c0", "stc1c1", "stc1c2", "stc1c3", "stc1ctrl")
    host = fake_host(node.root, ["stc0", "stc0c0", "stc0c1", "stc0c2", "stc0c3", "stc0ctrl", *npu1_nodes],
                     {BUS0: 0, BUS1: 1}, vendor=0x23E2, device=0x0100)
    npus = STCML.fixture(node.root / "stcml.fixture", fixture_values([{"bus_id": BUS0}, {"bus_id": BUS1}]),
                         monkeypatch)
    monkeypatch.delenv("FAKE_STC_SMI_OUTPUT", raising=False)  # stc-smi prints nothing: usage metrics absent
    hpe = node.root / "hpe"
    start_agent(*backend_flags("streamcomputing", host, library_path=libstcml, smi_path=FAKE_STC_SMI,
                               hpe_root=hpe, health_poll_interval_seconds=0.2))
    state = kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert sorted(state.devices) == [BUS0, BUS1]

    with pytest.raises(AdmissionError, match="at most 1"):
        kubelet.allocate(RESOURCE, 2, pod="greedy")

    response = kubelet.allocate(RESOURCE, 1, pod="p", ids=[BUS1])
    (container,) = response.container_responses
    assert dict(container.envs) == {"STC_VISIBLE_DEVICES": "1"}
    assert container_devices(response) == host.node_paths(*npu1_nodes)
    assert [(m.host_path, m.container_path, m.read_only) for m in container.mounts] == [(str(hpe), str(hpe), True)]

    expect_health_round_trip(kubelet, RESOURCE, npus, BUS0, sick={"dev0.board": 1}, healthy={"dev0.board": 0})

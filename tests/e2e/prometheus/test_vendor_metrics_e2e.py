"""The real ``krakenplug run --backend nvidia`` on the fake NVML: the page shows what NVML offers (issue 9).

NVML v2 reports the driver's reserved memory apart from ``used``; a GPU whose memory queries answer
NO_PERMISSION (MIG in some setups) keeps its other series but has no memory series at all, never a 0;
``krakenplug_backend_info`` names the library and the memory API generation. The fake library and the
fake host trees are the backend tests' (tests/unit/backends/fakelib.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from httpcheck import free_port, get, wait_until_serving
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "backends"))

from fakelib import NVML, backend_opt_flags, fake_host, fixture_values  # noqa: E402

pytestmark = pytest.mark.e2e

UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-000000000000"
NO_PERMISSION = 4


@pytest.fixture(scope="module")
def libnvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return NVML.build(tmp_path_factory.mktemp("nvml"))


def _by_index(page: dict[str, list[tuple[dict[str, str], float]]], name: str) -> dict[str, float]:
    return {labels["device_index"]: value for labels, value in page.get(name, [])}


def test_nvidia_page_shows_reserved_memory_and_no_fake_zero(node, start_agent: Callable, libnvml: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    host = fake_host(node.root, ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"],
                     {"0000:3b:00.0": 0, "0000:d8:00.0": 1})
    NVML.fixture(node.root / "nvml.fixture", {
        **fixture_values([
            {"uuid": UUID0, "bus_id": "0000:3b:00.0", "name": "NVIDIA H100 80GB HBM3", "minor": 0,
             "memory_total_mb": 81559, "memory_used_mb": 2048, "memory_reserved_mb": 512, "util": 88},
            {"uuid": UUID1, "bus_id": "0000:d8:00.0", "name": "NVIDIA H100 80GB HBM3", "minor": 1,
             "memory_total_mb": 81559, "util": 7}], driver_version="550.54.15"),
        "fail.nvmlDeviceGetMemoryInfo_v2.1": NO_PERMISSION, "fail.nvmlDeviceGetMemoryInfo.1": NO_PERMISSION,
    }, monkeypatch)
    port = free_port()
    agent = start_agent("--no-plugin", "--exporter", "--metrics-address", f"127.0.0.1:{port}", "--backend", "nvidia",
                        *backend_opt_flags({**host.options, "library_path": libnvml}),
                        config={"exporter": {"base_unit_metrics": True}})
    wait_until_serving(port, running=lambda: agent.running, log=agent.log)
    code, _, body = get(port)
    assert code == 200, agent.log()
    page = {family.name: [(sample.labels, sample.value) for sample in family.samples]
            for family in text_string_to_metric_families(body.decode())}

    assert _by_index(page, "krakenplug_device_info") == {"0": 1.0, "1": 1.0}
    assert _by_index(page, "krakenplug_device_util") == {"0": 88.0, "1": 7.0}
    assert _by_index(page, "krakenplug_device_memory_used") == {"0": 2048.0}  # v2: without the reserve
    assert _by_index(page, "krakenplug_device_memory_reserved") == {"0": 512.0}
    assert _by_index(page, "krakenplug_device_memory_reserved_bytes") == {"0": 512.0 * 1048576}
    assert _by_index(page, "krakenplug_device_memory_total") == {"0": 81559.0}  # GPU 1: absent, not 0
    assert _by_index(page, "krakenplug_device_memory_total_bytes") == {"0": 81559.0 * 1048576}
    assert page["krakenplug_collector_up"] == [({"vendor": "nvidia"}, 1.0)]
    (labels, value), = page["krakenplug_backend_info"]
    assert value == 1.0 and labels["vendor"] == "nvidia"
    assert labels["vendor_api"].startswith("NVML ") and "(driver 550.54.15)" in labels["vendor_api"]
    assert labels["vendor_path"].startswith("pynvml; memory v2;"), labels
    assert "Traceback" not in agent.log()

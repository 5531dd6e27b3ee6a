"""Ascend backend through its real ctypes binding against a fake libdcmi.so (fakelibs/fake_dcmi.c)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakelib import (
    open_vendor,
    DCMI,
    FakeHost,
    Fixture,
    devices_by_id,
    devices_json,
    expect_bounded_hang,
    expect_init_error_handled,
    fake_host,
    fixture_values,
)

from krakenplug import errors
from krakenplug.backends import base
from krakenplug.backends.ascend import AscendBackend
from krakenplug.hub import DeviceHub

# 3 NPUs: card 0 holds logic 0 and 1, card 1 holds logic 2; physical IDs differ from logic IDs on purpose.
BASE_FIXTURE = fixture_values([
    {"phy_id": 4, "bus_id": "0000:c1:00.0", "hbm_total_mb": 65536, "hbm_used_mb": 3072, "util": 37, "power": 735,
     "temp": 51},
    {"phy_id": 5, "bus_id": "0000:c2:00.0", "chip_name": "910B4"},
    {"phy_id": 6, "bus_id": "0000:81:00.0", "chip_name": "310P3", "hbm_total_mb": 0, "mem_total_mb": 21527,
     "mem_available_mb": 20503},
], per_card=2, driver_version="24.1.rc2")


@pytest.fixture(scope="session")
def libdcmi(fakelib_dir: Path) -> Path:
    return DCMI.build(fakelib_dir / "dcmi")


@pytest.fixture(scope="session")
def libdcmi_minimal(fakelib_dir: Path) -> Path:
    """An older/smaller DCMI: no power, no HBM query, no chip_info_v2, no card_list, no driver version."""
    return DCMI.build(fakelib_dir / "dcmi-minimal", omit=[
        "dcmi_get_device_power_info", "dcmi_get_device_hbm_info", "dcmi_get_device_chip_info_v2",
        "dcmi_get_card_list", "dcmi_get_driver_version"])


@pytest.fixture(scope="session")
def libdcmi_v2(fakelib_dir: Path) -> Path:
    """A newer driver's library: only the dcmiv2_* API."""
    return DCMI.build(fakelib_dir / "dcmi-v2", defines=["DCMI_V2_ONLY"])


@pytest.fixture
def fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    return DCMI.fixture(tmp_path / "dcmi.fixture", BASE_FIXTURE, monkeypatch)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return fake_host(tmp_path, ["davinci4", "davinci5", "davinci_manager", "devmm_svm"],
                     {"0000:c1:00.0": 0, "0000:c2:00.0": 1, "0000:81:00.0": -1})


def open_backend(library: Path, host: FakeHost, **options: object) -> AscendBackend:
    return open_vendor(AscendBackend, library, host, **options)


@pytest.fixture
def backend(libdcmi: Path, fixture: Fixture, host: FakeHost) -> Iterator[AscendBackend]:
    opened = open_backend(libdcmi, host, call_timeout_seconds=2.0)
    yield opened
    opened.close()


def test_enumerates_npus_by_physical_id_across_cards(backend: AscendBackend, host: FakeHost) -> None:
    devices = backend.devices()
    assert [(d.id, d.index, d.model, d.memory_total_mb, d.numa_node, d.pci_bus_id) for d in devices] == [
        ("Ascend-4", 4, "Ascend910B3", 65536, 0, "0000:c1:00.0"),
        ("Ascend-5", 5, "Ascend910B4", 65536, 1, "0000:c2:00.0"),
        ("Ascend-6", 6, "Ascend310P3", 21527, None, "0000:81:00.0"),
    ]
    assert all(d.vendor == "ascend" and d.healthy for d in devices)
    assert {d.resource for d in devices} == {"krakenplug.pcl.ac.cn/ascend"}
    assert devices[0].device_nodes == (base.DeviceNode(str(host.dev / "davinci4"), "/dev/davinci4"),)
    assert devices[2].device_nodes == ()  # /dev/davinci6 is absent from the fake /dev


def test_resource_rules_pick_per_model_names(libdcmi: Path, fixture: Fixture, host: FakeHost) -> None:
    rules = [base.ResourceRule(name="huawei.com/Ascend310P", models=["ascend310p*"])]
    backend = open_backend(libdcmi, host, resources=rules)
    assert [d.resource for d in backend.devices()] == [
        "krakenplug.pcl.ac.cn/ascend", "krakenplug.pcl.ac.cn/ascend", "huawei.com/Ascend310P"]
    backend.close()


def test_allocate_hands_out_present_device_files_and_physical_ids(libdcmi: Path, fixture: Fixture,
                                                                  host: FakeHost) -> None:
    backend = open_backend(libdcmi, host, driver_mounts=["/usr/local/Ascend/driver"])
    devices = devices_by_id(backend)
    allocation = backend.allocate([devices["Ascend-4"], devices["Ascend-5"]])
    assert allocation.envs == {"ASCEND_VISIBLE_DEVICES": "4,5"}
    assert [(n.host_path, n.container_path) for n in allocation.device_nodes] == host.node_paths(
        "davinci4", "davinci5", "davinci_manager", "devmm_svm")  # hisi_hdc is not in the fake /dev: not handed out
    assert allocation.mounts == (base.Mount("/usr/local/Ascend/driver", "/usr/local/Ascend/driver", True),)
    backend.close()


def test_samples_convert_units(backend: AscendBackend) -> None:
    devices = devices_by_id(backend)
    assert backend.sample(devices["Ascend-4"]) == base.DeviceSample(
        utilization_percent=37.0, memory_used_mb=3072.0, memory_total_mb=65536.0, temperature_celsius=51.0,
        power_watts=73.5)  # DCMI power is in 0.1 W
    without_hbm = backend.sample(devices["Ascend-6"])
    assert (without_hbm.memory_total_mb, without_hbm.memory_used_mb) == (21527.0, 1024.0)


def test_health_code_marks_unhealthy_with_hex_error_codes_and_recovers(backend: AscendBackend,
                                                                       fixture: Fixture) -> None:
    assert devices_by_id(backend)["Ascend-5"].healthy
    fixture.update({"dev1.health": 2, "dev1.errors": "80E01801,80C98009"})
    sick = devices_by_id(backend)["Ascend-5"]
    assert sick.health is base.Health.UNHEALTHY
    assert sick.health_reason == "dcmi health 2; error codes 0x80E01801, 0x80C98009"
    assert devices_by_id(backend)["Ascend-4"].healthy
    fixture.update({"dev1.health": 0, "dev1.errors": ""})
    assert devices_by_id(backend)["Ascend-5"].healthy


def test_failed_query_keeps_identity_and_names_the_code(backend: AscendBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"dev0.fail": -8012})
    lost = devices_by_id(backend)["Ascend-4"]
    assert (lost.health, lost.model, lost.pci_bus_id) == (base.Health.UNHEALTHY, "Ascend910B3", "0000:c1:00.0")
    assert "DCMI_ERR_CODE_NOT_READY (-8012)" in lost.health_reason
    fixture.remove("dev0.fail")
    assert devices_by_id(backend)["Ascend-4"].healthy


def test_listing_failure_and_vanished_npus_stay_listed_unhealthy(backend: AscendBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"fail.dcmi_get_card_list": -8005})
    devices = backend.devices()
    assert len(devices) == 3 and not any(d.healthy for d in devices)
    assert "cannot list NPUs: dcmi_get_card_list failed: DCMI_ERR_CODE_INNER_ERR (-8005)" in devices[0].health_reason
    fixture.update({"fail.dcmi_get_card_list": 0, "count": 2})
    gone = devices_by_id(backend)["Ascend-6"]
    assert gone.health_reason == "DCMI no longer lists this NPU"


def test_the_hub_sees_health_changes_both_ways(backend: AscendBackend, fixture: Fixture) -> None:
    hub = DeviceHub(backend)
    first = hub.refresh()
    fixture.update({"dev2.health": 3})
    sick = hub.refresh()
    assert sick.version == first.version + 1 and not sick.by_id["Ascend-6"].healthy
    fixture.update({"dev2.health": 0})
    assert hub.refresh().by_id["Ascend-6"].healthy


def test_a_310p_gets_its_memory_from_the_v3_query_not_hbm(backend: AscendBackend, fixture: Fixture) -> None:
    # the fake fails dcmi_get_device_hbm_info on a 310P with INNER_ERR: asking it would drop the NPU
    npu = devices_by_id(backend)["Ascend-6"]
    assert (npu.healthy, npu.memory_total_mb) == (True, 21527)
    assert backend.sample(npu).memory_used_mb == 1024.0


def test_a_failing_memory_query_never_drops_an_npu(backend: AscendBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"fail.dcmi_get_device_memory_info_v3.2": -8005, "fail.dcmi_get_device_hbm_info.0": -8005})
    devices = devices_by_id(backend)
    assert [(d.healthy, d.memory_total_mb) for d in devices.values()] == [(True, 65536), (True, 65536),
                                                                          (True, 21527)]  # last known totals
    sample = backend.sample(devices["Ascend-6"])
    assert (sample.memory_total_mb, sample.memory_used_mb, sample.temperature_celsius) == (None, None, 45.0)


def test_a_failing_bus_id_query_reads_as_absent_and_the_npu_is_served(backend: AscendBackend,
                                                                     fixture: Fixture) -> None:
    fixture.update({"fail.dcmi_get_device_pcie_info_v2.0": -8005})
    npu = devices_by_id(backend)["Ascend-4"]
    assert (npu.healthy, npu.pci_bus_id, npu.numa_node) == (True, None, None)


@pytest.mark.parametrize("health, codes, healthy", [
    (1, "", True),                       # a minor alarm without a fault code
    (1, "80E21007", True),               # NotHandle-level fault (Huawei's default faultCode.json)
    (2, "80E21007,80C98006", True),      # only NotHandle-level faults
    (2, "80E21007,80C98009", False),     # one fault that is not NotHandle-level
    (2, "", False),                      # a major alarm without codes
    (3, "", False),
], ids=["minor", "not-handled", "all-not-handled", "one-handled", "major", "critical"])
def test_health_is_classified_by_fault_level(backend: AscendBackend, fixture: Fixture, health: int, codes: str,
                                             healthy: bool) -> None:
    fixture.update({"dev1.health": health, "dev1.errors": codes})
    assert devices_by_id(backend)["Ascend-5"].healthy is healthy
    assert devices_by_id(backend)["Ascend-4"].healthy


def test_not_handled_codes_are_an_option(libdcmi: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libdcmi, host, not_handled_fault_codes="80C98009")
    fixture.update({"dev1.health": 2, "dev1.errors": "80C98009"})
    assert devices_by_id(backend)["Ascend-5"].healthy
    fixture.update({"dev1.errors": "80E21007"})  # no longer in the (replaced) list
    assert not devices_by_id(backend)["Ascend-5"].healthy
    backend.close()


def test_not_ready_means_the_card_dropped(backend: AscendBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"fail.dcmi_get_device_health.1": -8012})
    npu = devices_by_id(backend)["Ascend-5"]
    assert not npu.healthy and npu.health_reason.startswith("card dropped: ")
    fixture.update({"fail.dcmi_get_device_health.1": 0, "fail.dcmi_get_device_logic_id.1": -8012})
    npu = devices_by_id(backend)["Ascend-5"]
    assert (npu.healthy, npu.model) == (False, "Ascend910B4") and "card dropped" in npu.health_reason


def test_a_v2_only_library_is_used_through_dcmiv2(libdcmi_v2: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libdcmi_v2, host)
    try:
        devices = backend.devices()
        assert [(d.id, d.model, d.memory_total_mb, d.pci_bus_id) for d in devices] == [
            ("Ascend-4", "Ascend910B3", 65536, "0000:c1:00.0"), ("Ascend-5", "Ascend910B4", 65536, "0000:c2:00.0"),
            ("Ascend-6", "Ascend310P3", 0, "0000:81:00.0")]  # dcmiv2 has no v3 memory query: absent
        assert devices[2].healthy
        assert backend.sample(devices[0]) == base.DeviceSample(
            utilization_percent=37.0, memory_used_mb=3072.0, memory_total_mb=65536.0, temperature_celsius=51.0,
            power_watts=73.5)
        fixture.update({"dev1.health": 2, "dev1.errors": "80C98009"})
        assert devices_by_id(backend)["Ascend-5"].health_reason == "dcmi health 2; error codes 0x80C98009"
        info = backend.library_info()
        assert (info.library, info.api, info.path) == (str(libdcmi_v2), "dcmiv2", "dcmi")
        assert "does not export dcmi_init" in info.reason
        assert backend.driver_version() == "24.1.rc2"
    finally:
        backend.close()


def test_missing_symbols_fall_back_or_read_as_not_offered(libdcmi_minimal: Path, fixture: Fixture,
                                                          host: FakeHost) -> None:
    backend = open_backend(libdcmi_minimal, host)
    devices = backend.devices()
    assert [(d.id, d.model, d.memory_total_mb) for d in devices] == [
        ("Ascend-4", "Ascend910B3", 15360), ("Ascend-5", "Ascend910B4", 15360), ("Ascend-6", "Ascend310P3", 21527)]
    sample = backend.sample(devices[0])
    assert sample.power_watts is None  # not exported: absent, never a fake 0
    assert (sample.utilization_percent, sample.temperature_celsius) == (37.0, 51.0)
    assert backend.driver_version() == "24.1.rc2"  # from dcmi_get_dcmi_version
    backend.close()


def test_driver_version(backend: AscendBackend) -> None:
    assert backend.driver_version() == "24.1.rc2"


def test_init_failure_is_unavailable_with_the_code_name(libdcmi: Path, fixture: Fixture,
                                                        host: FakeHost) -> None:
    fixture.update({"init_error": -8005})
    with pytest.raises(errors.BackendUnavailable, match=r"dcmi_init .* DCMI_ERR_CODE_INNER_ERR \(-8005\)"):
        open_backend(libdcmi, host)


def test_missing_library_lists_what_was_tried(tmp_path: Path, host: FakeHost) -> None:
    with pytest.raises(errors.BackendUnavailable, match="no such file"):
        open_backend(tmp_path / "nowhere" / "libdcmi.so", host)


@pytest.mark.parametrize("fail_on_init_error", [False, True])
def test_open_backend_degrades_or_fails_on_init_error(libdcmi: Path, fixture: Fixture, host: FakeHost,
                                                      clean_env: None, fail_on_init_error: bool) -> None:
    fixture.update({"init_error": -8008})
    expect_init_error_handled("ascend", {"library_path": str(libdcmi), **host.options},
                              fail_on_init_error=fail_on_init_error, match="DCMI_ERR_CODE_DEVICE_NOT_EXIST")


def test_hanging_call_is_bounded_and_marks_only_that_npu(libdcmi: Path, fixture: Fixture,
                                                         host: FakeHost) -> None:
    backend = open_backend(libdcmi, host, call_timeout_seconds=0.3)
    backend.devices()
    expect_bounded_hang(backend, fixture, hang="hang.dcmi_get_device_health.1", seconds=3, device_id="Ascend-5",
                        reason="dcmi_get_device_health(card 0 device 1) did not return within 0.3 s")
    backend.close()


def test_cli_devices_json(libdcmi: Path, fixture: Fixture, host: FakeHost) -> None:
    rows = devices_json("ascend", library_path=libdcmi, **host.options)
    assert rows[0]["library"] == {"library": str(libdcmi), "api": "dcmi", "path": "dcmi",
                                  "reason": "v1 API (dcmi_*): the library exports dcmi_init"}
    assert [(r["id"], r["model"], r["numa_node"], r["health"]) for r in rows] == [
        ("Ascend-4", "Ascend910B3", 0, "Healthy"), ("Ascend-5", "Ascend910B4", 1, "Healthy"),
        ("Ascend-6", "Ascend310P3", None, "Healthy")]

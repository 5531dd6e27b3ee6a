"""Ascend backend through its real ctypes binding against a fake libdcmi.so (fakelibs/fake_dcmi.c)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from fakelib import (
    open_vendor,
    DCMI,
    FakeHost,
    Fixture,
    Watch,
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


def test_watch_health_reports_changes_both_ways(libdcmi: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libdcmi, host, health_poll_interval_seconds=0.05)
    with closing(backend), Watch(backend) as watch:  # the first snapshot is taken (and announced once)
        fixture.update({"dev2.health": 1})
        watch.expect_change(lambda: not devices_by_id(backend)["Ascend-6"].healthy)
        fixture.update({"dev2.health": 0})
        watch.expect_change(lambda: devices_by_id(backend)["Ascend-6"].healthy)


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
    assert [(r["id"], r["model"], r["numa_node"], r["health"]) for r in rows] == [
        ("Ascend-4", "Ascend910B3", 0, "Healthy"), ("Ascend-5", "Ascend910B4", 1, "Healthy"),
        ("Ascend-6", "Ascend310P3", None, "Healthy")]

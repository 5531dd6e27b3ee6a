"""Cambricon backend through its real ctypes binding against a fake libcndev.so (fakelibs/fake_cndev.c)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from fakelib import (
    open_vendor,
    CNDEV,
    FakeHost,
    Fixture,
    devices_by_id,
    devices_json,
    expect_bounded_hang,
    expect_bounded_sample_hang,
    expect_init_error_handled,
    fake_host,
    fixture_values,
    make_dev_tree,
    make_pci_device,
)

from krakenplug import errors
from krakenplug.backends import base
from krakenplug.backends.cambricon import CambriconBackend
from krakenplug.hub import DeviceHub

UUID0 = "5a8b31c5-0f53-4a40-9a47-7b4e2c9d0e11"
UUID1 = "6c2d7e90-1b3a-4f8e-8d2c-1a2b3c4d5e6f"
UUID2 = "7f1e2d3c-4b5a-4968-8776-655443322110"
BASE_FIXTURE = fixture_values([
    {"uuid": UUID0, "name": "MLU370-X8", "bus_id": "0000:39:00.0", "memory_total_mb": 24576, "memory_used_mb": 1024,
     "util": 63, "power_w": 106, "temp_chip": 47},
    {"uuid": UUID1, "name": "MLU370-X8", "bus_id": "0000:3d:00.0", "minor": 1},
    {"uuid": UUID2, "name": "MLU590-M9", "bus_id": "0000:81:00.0", "minor": 2, "memory_total_mb": 81920, "numa": 1},
], driver_version="5.10.22")


@pytest.fixture(scope="session")
def libcndev(fakelib_dir: Path) -> Path:
    return CNDEV.build(fakelib_dir / "cndev")


@pytest.fixture(scope="session")
def libcndev_minimal(fakelib_dir: Path) -> Path:
    return CNDEV.build(fakelib_dir / "cndev-minimal",
                       omit=["cndevGetTemperatureInfo", "cndevGetDevicePowerInfo", "cndevDeviceGetMinorNumber"])


@pytest.fixture(scope="session")
def libcndev_2022(fakelib_dir: Path) -> Path:
    return CNDEV.build(fakelib_dir / "cndev-2022", defines=["CNDEV_2022"])


@pytest.fixture
def fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    return CNDEV.fixture(tmp_path / "cndev.fixture", BASE_FIXTURE, monkeypatch)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return fake_host(tmp_path, ["cambricon_dev0", "cambricon_ipcm0", "cambricon_dev1", "cambricon_dev2",
                                "cambricon_ctl"], {"0000:39:00.0": 0, "0000:3d:00.0": 0})


def open_backend(library: Path, host: FakeHost, **options: object) -> CambriconBackend:
    return open_vendor(CambriconBackend, library, host, **options)


@pytest.fixture
def backend(libcndev: Path, fixture: Fixture, host: FakeHost) -> Iterator[CambriconBackend]:
    opened = open_backend(libcndev, host, call_timeout_seconds=2.0)
    yield opened
    opened.close()


def test_enumerates_mlus_by_uuid(backend: CambriconBackend, host: FakeHost) -> None:
    devices = backend.devices()
    assert [(d.id, d.index, d.model, d.memory_total_mb, d.numa_node, d.pci_bus_id) for d in devices] == [
        (f"MLU-{UUID0}", 0, "MLU370-X8", 24576, 0, "0000:39:00.0"),
        (f"MLU-{UUID1}", 1, "MLU370-X8", 24576, 0, "0000:3d:00.0"),
        (f"MLU-{UUID2}", 2, "MLU590-M9", 81920, 1, "0000:81:00.0"),  # NUMA from CNDev: sysfs has no entry
    ]
    assert all(d.vendor == "cambricon" and d.healthy and d.resource == "krakenplug.pcl.ac.cn/cambricon"
               for d in devices)
    assert [(n.host_path, n.container_path) for n in devices[0].device_nodes] == host.node_paths(
        "cambricon_dev0", "cambricon_ipcm0")
    assert [n.container_path for n in devices[1].device_nodes] == ["/dev/cambricon_dev1"]  # no ipcm1 on this host


def test_the_2022_library_generation_is_refused_with_the_supported_one_named(libcndev_2022: Path, fixture: Fixture,
                                                                             host: FakeHost) -> None:
    with pytest.raises(errors.BackendUnavailable, match=r"older CNDev generation \(it does not export "
                       r"cndevGetDeviceHandleByIndex, cndevGetMemoryUsageV2, cndevGetPCIeInfoV2\).*"
                       r"handle API \(cndevGetDeviceHandleByIndex, CNDEV_VERSION_6\)"):
        open_backend(libcndev_2022, host)


def test_a_library_without_struct_version_6_is_refused(libcndev: Path, fixture: Fixture, host: FakeHost) -> None:
    fixture.update({"api_version": 5})
    with pytest.raises(errors.BackendUnavailable, match="rejects struct version CNDEV_VERSION_6"):
        open_backend(libcndev, host)


def test_allocate_hands_out_device_files_control_node_and_indexes(backend: CambriconBackend,
                                                                   host: FakeHost) -> None:
    devices = backend.devices()
    allocation = backend.allocate([devices[0], devices[2]])
    assert allocation.envs == {"CAMBRICON_VISIBLE_DEVICES": "0,2"}
    assert [n.container_path for n in allocation.device_nodes] == [
        "/dev/cambricon_dev0", "/dev/cambricon_ipcm0", "/dev/cambricon_dev2", "/dev/cambricon_ctl"]
    assert allocation.device_nodes[-1].host_path == str(host.dev / "cambricon_ctl")


def test_samples(backend: CambriconBackend) -> None:
    assert backend.sample(backend.devices()[0]) == base.DeviceSample(
        utilization_percent=63.0, memory_used_mb=1024.0, memory_total_mb=24576.0, temperature_celsius=47.0,
        power_watts=106.0)


def test_health_state_marks_unhealthy_and_recovers(backend: CambriconBackend, fixture: Fixture) -> None:
    fixture.update({"dev1.health": 0, "dev1.device_state": 0})
    sick = devices_by_id(backend)[f"MLU-{UUID1}"]
    assert sick.health is base.Health.UNHEALTHY
    assert sick.health_reason == "cndev health 0 (device state IN_PROBLEM, driver state 4)"
    fixture.update({"dev1.health": 1, "dev1.device_state": 1})
    assert devices_by_id(backend)[f"MLU-{UUID1}"].healthy


def test_failed_query_keeps_identity_and_names_the_code(backend: CambriconBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"dev2.fail": 18})
    lost = devices_by_id(backend)[f"MLU-{UUID2}"]
    assert (lost.health, lost.model, lost.index) == (base.Health.UNHEALTHY, "MLU590-M9", 2)
    assert "CNDEV_ERROR_IN_PROBLEM (18)" in lost.health_reason
    fixture.remove("dev2.fail")
    assert devices_by_id(backend)[f"MLU-{UUID2}"].healthy


def test_the_hub_sees_health_changes_both_ways(libcndev: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libcndev, host)
    with closing(backend):
        hub = DeviceHub(backend)
        first = hub.refresh()
        fixture.update({"dev0.health": 0})
        sick = hub.refresh()
        assert sick.version == first.version + 1 and not sick.by_id[f"MLU-{UUID0}"].healthy
        fixture.update({"dev0.health": 1})
        assert hub.refresh().by_id[f"MLU-{UUID0}"].healthy


def test_compute_mode_prohibited_is_unhealthy(backend: CambriconBackend, fixture: Fixture) -> None:
    fixture.update({"dev1.compute_mode": 1})  # EXCLUSIVE still serves
    assert devices_by_id(backend)[f"MLU-{UUID1}"].healthy
    fixture.update({"dev1.compute_mode": 2})
    device = devices_by_id(backend)[f"MLU-{UUID1}"]
    assert device.health_reason == "compute mode PROHIBITED (no context may use the MLU)"
    fixture.update({"dev1.compute_mode": 0})
    assert devices_by_id(backend)[f"MLU-{UUID1}"].healthy


def test_extra_device_nodes_are_handed_out_where_present(backend: CambriconBackend, host: FakeHost) -> None:
    make_dev_tree(host.dev, ["cambricon_gdr", "cambr-msgq:0", "cambr-rpc:0", "cmsg_ctrl0", "commu0", "ttyMS0",
                             "commu1"])
    devices = backend.devices()
    allocation = backend.allocate([devices[0], devices[1]])
    assert [n.container_path for n in allocation.device_nodes] == [
        "/dev/cambricon_dev0", "/dev/cambricon_ipcm0", "/dev/cambr-msgq:0", "/dev/cambr-rpc:0", "/dev/cmsg_ctrl0",
        "/dev/commu0", "/dev/ttyMS0", "/dev/cambricon_dev1", "/dev/commu1", "/dev/cambricon_ctl",
        "/dev/cambricon_gdr"]


def test_the_cndev_count_is_checked_against_sysfs(backend: CambriconBackend, host: FakeHost,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    for bus_id in ("0000:39:00.0", "0000:3d:00.0", "0000:81:00.0", "0000:b1:00.0"):
        directory = make_pci_device(host.sysfs, bus_id, vendor=0xCABC, device=0x0370)
        (directory / "class").write_text("0x120000\n")
    backend.devices()
    assert "sysfs shows 4 MLUs (vendor 0xcabc, class 0x12, VFs skipped) but CNDev lists 3" in caplog.text


def test_preferred_allocation_keeps_to_mlu_link_peers(libcndev: Path, fixture: Fixture, host: FakeHost) -> None:
    uuid3 = "8a9b0c1d-2e3f-4051-9263-748596a7b8c9"
    fixture.update({"count": 4, "dev3.uuid": uuid3, "dev3.bus_id": "0000:82:00.0",
                    "dev0.links": f"{UUID2},-,{UUID2}", "dev2.links": f"{UUID0},{UUID0}",
                    "dev1.links": uuid3, "dev3.links": UUID1})
    backend = open_backend(libcndev, host)
    with closing(backend):
        devices = backend.devices()
        assert isinstance(backend, base.SupportsPreferredAllocation)
        # by index alone 0 and 1 would be picked; 0 and 2 are joined by two MLU-Links
        assert backend.preferred_allocation(devices, [devices[0]], 2) == [f"MLU-{UUID0}", f"MLU-{UUID2}"]
        assert backend.preferred_allocation(devices, [], 2)[1] != f"MLU-{UUID1}"
        assert backend.preferred_allocation([devices[1], devices[2], devices[3]], [devices[3]], 2) == [
            f"MLU-{uuid3}", f"MLU-{UUID1}"]


def test_a_failing_optional_query_reads_as_absent(backend: CambriconBackend, fixture: Fixture) -> None:
    fixture.update({"fail.cndevGetPCIeInfoV2.0": 7, "fail.cndevGetDeviceUtilizationInfo.0": 7})
    device = devices_by_id(backend)[f"MLU-{UUID0}"]
    assert (device.healthy, device.pci_bus_id) == (True, None)
    sample = backend.sample(device)
    assert (sample.utilization_percent, sample.memory_used_mb) == (None, 1024.0)


def test_library_info(backend: CambriconBackend, libcndev: Path) -> None:
    info = backend.library_info()
    assert (info.library, info.api, info.path) == (str(libcndev), "cndev handle API v6", "cndev")


def test_missing_symbols_read_as_not_offered(libcndev_minimal: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libcndev_minimal, host)
    devices = backend.devices()
    assert [n.container_path for n in devices[1].device_nodes] == ["/dev/cambricon_dev1"]  # numbered by index
    sample = backend.sample(devices[0])
    assert (sample.temperature_celsius, sample.power_watts) == (None, None)
    assert (sample.utilization_percent, sample.memory_used_mb) == (63.0, 1024.0)
    backend.close()


def test_driver_version(backend: CambriconBackend) -> None:
    assert backend.driver_version() == "5.10.22"


def test_init_failure_is_unavailable_with_the_code_name(libcndev: Path, fixture: Fixture,
                                                        host: FakeHost) -> None:
    fixture.update({"init_error": 1})
    with pytest.raises(errors.BackendUnavailable, match=r"cndevInit failed: CNDEV_ERROR_NO_DRIVER \(1\)"):
        open_backend(libcndev, host)


@pytest.mark.parametrize("fail_on_init_error", [False, True])
def test_open_backend_degrades_or_fails_on_init_error(libcndev: Path, fixture: Fixture, host: FakeHost,
                                                      clean_env: None, fail_on_init_error: bool) -> None:
    fixture.update({"init_error": 2})
    expect_init_error_handled("cambricon", {"library_path": str(libcndev), **host.options},
                              fail_on_init_error=fail_on_init_error, match="CNDEV_ERROR_LOW_DRIVER_VERSION")


def test_hanging_health_call_is_bounded_and_marks_only_that_mlu(libcndev: Path, fixture: Fixture,
                                                                host: FakeHost) -> None:
    backend = open_backend(libcndev, host, call_timeout_seconds=0.3)
    backend.devices()
    expect_bounded_hang(backend, fixture, hang="hang.cndevGetCardHealthState.0", seconds=3, device_id=f"MLU-{UUID0}",
                        reason="cndevGetCardHealthState(device 0) did not return within 0.3 s")
    backend.close()


def test_hanging_sample_marks_the_mlu_until_the_call_returns_in_time(libcndev: Path, fixture: Fixture,
                                                                      host: FakeHost) -> None:
    backend = open_backend(libcndev, host, call_timeout_seconds=0.3)
    recovered = expect_bounded_sample_hang(backend, fixture, backend.devices()[1],
                                           hang="hang.cndevGetDevicePowerInfo.1", seconds=3,
                                           reason="cndevGetDevicePowerInfo(device 1) did not return within 0.3 s")
    assert recovered.power_watts == 106.0
    backend.close()


def test_cli_devices_json(libcndev: Path, fixture: Fixture, host: FakeHost) -> None:
    rows = devices_json("cambricon", library_path=libcndev, **host.options)
    assert [(r["id"], r["model"], r["numa_node"], r["health"], r["pci_bus_id"]) for r in rows] == [
        (f"MLU-{UUID0}", "MLU370-X8", 0, "Healthy", "0000:39:00.0"),
        (f"MLU-{UUID1}", "MLU370-X8", 0, "Healthy", "0000:3d:00.0"),
        (f"MLU-{UUID2}", "MLU590-M9", 1, "Healthy", "0000:81:00.0")]


def test_model_name_failure_is_reported_not_papered_over(backend: CambriconBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"fail.cndevGetCardNameStringByDevId.1": 7})  # the fake then returns NULL
    device = devices_by_id(backend)[f"MLU-{UUID1}"]
    assert (device.health, device.model) == (base.Health.UNHEALTHY, "MLU370-X8")
    assert device.health_reason == "cndevGetCardNameStringByDevId failed: returned no name"

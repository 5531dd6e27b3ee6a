"""Ascend backend through its real ctypes binding against a fake libdcmi.so (fakelibs/fake_dcmi.c)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fakelib import Fixture, compile_fake_library, fake_host

from krakenplug import backends, errors, settings
from krakenplug.backends import base
from krakenplug.backends.ascend import AscendBackend, AscendOptions

# 3 NPUs: card 0 holds logic 0 and 1, card 1 holds logic 2; physical IDs differ from logic IDs on purpose.
BASE_FIXTURE = {
    "count": 3, "per_card": 2, "driver_version": "24.1.rc2",
    "dev0.phy_id": 4, "dev0.bus_id": "0000:c1:00.0", "dev0.hbm_total_mb": 65536, "dev0.hbm_used_mb": 3072,
    "dev0.util": 37, "dev0.power": 735, "dev0.temp": 51,
    "dev1.phy_id": 5, "dev1.bus_id": "0000:c2:00.0", "dev1.chip_name": "910B4",
    "dev2.phy_id": 6, "dev2.bus_id": "0000:81:00.0", "dev2.chip_name": "310P3", "dev2.hbm_total_mb": 0,
    "dev2.mem_total_mb": 21527, "dev2.mem_available_mb": 20503,
}


@pytest.fixture(scope="session")
def libdcmi(fakelib_dir: Path) -> Path:
    return compile_fake_library("fake_dcmi.c", "libdcmi.so", fakelib_dir / "dcmi")


@pytest.fixture(scope="session")
def libdcmi_minimal(fakelib_dir: Path) -> Path:
    """An older/smaller DCMI: no power, no HBM query, no chip_info_v2, no card_list, no driver version."""
    omitted = ["dcmi_get_device_power_info", "dcmi_get_device_hbm_info", "dcmi_get_device_chip_info_v2",
               "dcmi_get_card_list", "dcmi_get_driver_version"]
    return compile_fake_library("fake_dcmi.c", "libdcmi.so", fakelib_dir / "dcmi-minimal",
                                defines=[f"OMIT_{name}" for name in omitted])


@pytest.fixture
def fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    path = tmp_path / "dcmi.fixture"
    monkeypatch.setenv("FAKE_DCMI_FIXTURE", str(path))
    return Fixture(path, BASE_FIXTURE)


@pytest.fixture
def host(tmp_path: Path) -> dict[str, str]:
    return fake_host(tmp_path, ["davinci4", "davinci5", "davinci_manager", "devmm_svm"],
                     {"0000:c1:00.0": 0, "0000:c2:00.0": 1, "0000:81:00.0": -1}).options


def open_backend(library: Path, host: dict[str, str], **options: object) -> AscendBackend:
    backend = AscendBackend(AscendOptions(library_path=str(library), **host, **options), node_name="n1")
    backend.open()
    return backend


@pytest.fixture
def backend(libdcmi: Path, fixture: Fixture, host: dict[str, str]) -> AscendBackend:
    opened = open_backend(libdcmi, host, call_timeout_seconds=2.0)
    yield opened
    opened.close()


def by_id(backend: AscendBackend) -> dict[str, base.Device]:
    return {device.id: device for device in backend.devices()}


def test_enumerates_npus_by_physical_id_across_cards(backend: AscendBackend, host: dict[str, str]) -> None:
    devices = backend.devices()
    assert [(d.id, d.index, d.model, d.memory_total_mb, d.numa_node, d.pci_bus_id) for d in devices] == [
        ("Ascend-4", 4, "Ascend910B3", 65536, 0, "0000:c1:00.0"),
        ("Ascend-5", 5, "Ascend910B4", 65536, 1, "0000:c2:00.0"),
        ("Ascend-6", 6, "Ascend310P3", 21527, None, "0000:81:00.0"),
    ]
    assert all(d.vendor == "ascend" and d.healthy for d in devices)
    assert {d.resource for d in devices} == {"krakenplug.pcl.ac.cn/ascend"}
    dev_root = host["dev_root"]
    assert devices[0].device_nodes == (base.DeviceNode(f"{dev_root}/davinci4", "/dev/davinci4"),)
    assert devices[2].device_nodes == ()  # /dev/davinci6 is absent from the fake /dev


def test_resource_rules_pick_per_model_names(libdcmi: Path, fixture: Fixture, host: dict[str, str]) -> None:
    rules = [base.ResourceRule(name="huawei.com/Ascend310P", models=["ascend310p*"])]
    backend = open_backend(libdcmi, host, resources=rules)
    assert [d.resource for d in backend.devices()] == [
        "krakenplug.pcl.ac.cn/ascend", "krakenplug.pcl.ac.cn/ascend", "huawei.com/Ascend310P"]
    backend.close()


def test_allocate_hands_out_present_device_files_and_physical_ids(libdcmi: Path, fixture: Fixture,
                                                                  host: dict[str, str]) -> None:
    backend = open_backend(libdcmi, host, driver_mounts=["/usr/local/Ascend/driver"])
    devices = by_id(backend)
    allocation = backend.allocate([devices["Ascend-4"], devices["Ascend-5"]])
    dev_root = host["dev_root"]
    assert allocation.envs == {"ASCEND_VISIBLE_DEVICES": "4,5"}
    assert [(n.host_path, n.container_path) for n in allocation.device_nodes] == [
        (f"{dev_root}/davinci4", "/dev/davinci4"), (f"{dev_root}/davinci5", "/dev/davinci5"),
        (f"{dev_root}/davinci_manager", "/dev/davinci_manager"), (f"{dev_root}/devmm_svm", "/dev/devmm_svm"),
    ]  # hisi_hdc is not in the fake /dev, so it is not handed out
    assert allocation.mounts == (base.Mount("/usr/local/Ascend/driver", "/usr/local/Ascend/driver", True),)
    backend.close()


def test_samples_convert_units(backend: AscendBackend) -> None:
    devices = by_id(backend)
    assert backend.sample(devices["Ascend-4"]) == base.DeviceSample(
        utilization_percent=37.0, memory_used_mb=3072.0, memory_total_mb=65536.0, temperature_celsius=51.0,
        power_watts=73.5)  # DCMI power is in 0.1 W
    without_hbm = backend.sample(devices["Ascend-6"])
    assert (without_hbm.memory_total_mb, without_hbm.memory_used_mb) == (21527.0, 1024.0)


def test_health_code_marks_unhealthy_with_hex_error_codes_and_recovers(backend: AscendBackend,
                                                                       fixture: Fixture) -> None:
    assert by_id(backend)["Ascend-5"].healthy
    fixture.update({"dev1.health": 2, "dev1.errors": "80E01801,80C98009"})
    sick = by_id(backend)["Ascend-5"]
    assert sick.health is base.Health.UNHEALTHY
    assert sick.health_reason == "dcmi health 2; error codes 0x80E01801, 0x80C98009"
    assert by_id(backend)["Ascend-4"].healthy
    fixture.update({"dev1.health": 0, "dev1.errors": ""})
    assert by_id(backend)["Ascend-5"].healthy


def test_failed_query_keeps_identity_and_names_the_code(backend: AscendBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"dev0.fail": -8012})
    lost = by_id(backend)["Ascend-4"]
    assert (lost.health, lost.model, lost.pci_bus_id) == (base.Health.UNHEALTHY, "Ascend910B3", "0000:c1:00.0")
    assert "DCMI_ERR_CODE_NOT_READY (-8012)" in lost.health_reason
    fixture.remove("dev0.fail")
    assert by_id(backend)["Ascend-4"].healthy


def test_listing_failure_and_vanished_npus_stay_listed_unhealthy(backend: AscendBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"fail.dcmi_get_card_list": -8005})
    devices = backend.devices()
    assert len(devices) == 3 and not any(d.healthy for d in devices)
    assert "cannot list NPUs: dcmi_get_card_list failed: DCMI_ERR_CODE_INNER_ERR (-8005)" in devices[0].health_reason
    fixture.update({"fail.dcmi_get_card_list": 0, "count": 2})
    gone = by_id(backend)["Ascend-6"]
    assert gone.health_reason == "DCMI no longer lists this NPU"


def test_watch_health_reports_changes_both_ways(libdcmi: Path, fixture: Fixture, host: dict[str, str]) -> None:
    backend = open_backend(libdcmi, host, health_poll_interval_seconds=0.05)
    changes = threading.Semaphore(0)
    stop = threading.Event()
    watcher = threading.Thread(target=backend.watch_health, args=(stop, changes.release), daemon=True)
    watcher.start()
    try:
        assert changes.acquire(timeout=10)  # the first snapshot is taken (and announced once)
        fixture.update({"dev2.health": 1})
        assert changes.acquire(timeout=10)
        assert not by_id(backend)["Ascend-6"].healthy
        fixture.update({"dev2.health": 0})
        assert changes.acquire(timeout=10)
        assert by_id(backend)["Ascend-6"].healthy
    finally:
        stop.set()
        watcher.join(timeout=10)
        backend.close()
    assert not watcher.is_alive()


def test_missing_symbols_fall_back_or_read_as_not_offered(libdcmi_minimal: Path, fixture: Fixture,
                                                          host: dict[str, str]) -> None:
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
                                                        host: dict[str, str]) -> None:
    fixture.update({"init_error": -8005})
    with pytest.raises(errors.BackendUnavailable, match=r"dcmi_init .* DCMI_ERR_CODE_INNER_ERR \(-8005\)"):
        open_backend(libdcmi, host)


def test_missing_library_lists_what_was_tried(tmp_path: Path, host: dict[str, str]) -> None:
    with pytest.raises(errors.BackendUnavailable, match="no such file"):
        open_backend(tmp_path / "nowhere" / "libdcmi.so", host)


@pytest.mark.parametrize("fail_on_init_error", [False, True])
def test_open_backend_degrades_or_fails_on_init_error(libdcmi: Path, fixture: Fixture, host: dict[str, str],
                                                      clean_env: None, fail_on_init_error: bool) -> None:
    fixture.update({"init_error": -8008})
    config = settings.load(overrides={"backend": "ascend", "fail_on_init_error": fail_on_init_error,
                                      "backends": {"ascend": {"library_path": str(libdcmi), **host}}})
    if fail_on_init_error:
        with pytest.raises(errors.BackendUnavailable, match="DCMI_ERR_CODE_DEVICE_NOT_EXIST"):
            backends.open_backend(config)
        return
    degraded = backends.open_backend(config)
    assert list(degraded.devices()) == []
    degraded.close()


def test_hanging_call_is_bounded_and_marks_only_that_npu(libdcmi: Path, fixture: Fixture,
                                                         host: dict[str, str]) -> None:
    backend = open_backend(libdcmi, host, call_timeout_seconds=0.3)
    backend.devices()
    fixture.update({"hang.dcmi_get_device_health.1": 3})
    devices = by_id(backend)
    assert devices["Ascend-5"].health is base.Health.UNHEALTHY
    assert devices["Ascend-5"].health_reason == "dcmi_get_device_health(card 0 device 1) did not return within 0.3 s"
    assert devices["Ascend-4"].healthy and devices["Ascend-6"].healthy
    fixture.remove("hang.dcmi_get_device_health.1")
    assert by_id(backend)["Ascend-5"].healthy  # the same call returns in time again
    backend.close()


def test_cli_devices_json(libdcmi: Path, fixture: Fixture, host: dict[str, str], clean_env: None) -> None:
    env = {**os.environ, "FAKE_DCMI_FIXTURE": str(fixture.path)}
    result = subprocess.run(
        [sys.executable, "-m", "krakenplug", "devices", "--backend", "ascend", "--json",
         "--backend-opt", f"library_path={libdcmi}", "--backend-opt", f"dev_root={host['dev_root']}",
         "--backend-opt", f"sysfs_root={host['sysfs_root']}"],
        check=False, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["id"], r["model"], r["numa_node"], r["health"]) for r in rows] == [
        ("Ascend-4", "Ascend910B3", 0, "Healthy"), ("Ascend-5", "Ascend910B4", 1, "Healthy"),
        ("Ascend-6", "Ascend310P3", None, "Healthy")]

"""NVIDIA backend through pynvml against a fake libnvidia-ml.so.1 (fakelibs/fake_nvml.c).

pynvml loads NVML once per process, so every in-process test uses ONE fake build (the session fixture)
and changes behaviour through the fixture file; the build without some symbols runs in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from fakelib import (
    open_vendor,
    NVML,
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

from krakenplug import backends, errors, settings
from krakenplug.backends import base
from krakenplug.backends.nvidia import NvidiaBackend, NvidiaOptions, mig, xid
from krakenplug.discovery import labels

UUID0 = "GPU-5e1c6f3a-8a4b-4f0e-9d3c-1b2a3c4d5e6f"
UUID1 = "GPU-9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
BASE_FIXTURE = fixture_values([
    {"uuid": UUID0, "name": "NVIDIA H100 80GB HBM3", "bus_id": "0000:3b:00.0", "minor": 0, "memory_total_mb": 81559,
     "memory_used_mb": 2048, "util": 88, "temp": 61, "power_mw": 312456},
    {"uuid": UUID1, "name": "NVIDIA A100-SXM4-40GB", "bus_id": "0000:af:00.0", "minor": 3, "memory_total_mb": 40960},
], driver_version="550.54.15")
XID_EVENT, DOUBLE_BIT_ECC = 0x8, 0x2


@pytest.fixture(scope="session")
def libnvml(fakelib_dir: Path) -> Path:
    return NVML.build(fakelib_dir / "nvml")


@pytest.fixture
def fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    return NVML.fixture(tmp_path / "nvml.fixture", BASE_FIXTURE, monkeypatch)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return fake_host(tmp_path, ["nvidia0", "nvidia3", "nvidiactl", "nvidia-uvm"],
                     {"0000:3b:00.0": 0, "0000:af:00.0": 1})


def open_backend(library: Path | None, host: FakeHost, **options: object) -> NvidiaBackend:
    return open_vendor(NvidiaBackend, library, host, **options)


@pytest.fixture
def backend(libnvml: Path, fixture: Fixture, host: FakeHost) -> Iterator[NvidiaBackend]:
    opened = open_backend(libnvml, host, call_timeout_seconds=2.0)
    yield opened
    opened.close()


def test_enumerates_gpus_by_uuid(backend: NvidiaBackend, host: FakeHost) -> None:
    devices = backend.devices()
    assert [(d.id, d.index, d.model, d.memory_total_mb, d.numa_node, d.pci_bus_id) for d in devices] == [
        (UUID0, 0, "NVIDIA H100 80GB HBM3", 81559, 0, "0000:3b:00.0"),  # NVML prints 00000000:3B:00.0
        (UUID1, 1, "NVIDIA A100-SXM4-40GB", 40960, 1, "0000:af:00.0"),
    ]
    assert all(d.vendor == "nvidia" and d.healthy and d.resource == "krakenplug.pcl.ac.cn/nvidia" for d in devices)
    assert devices[1].device_nodes == (base.DeviceNode(str(host.dev / "nvidia3"), "/dev/nvidia3"),)


def test_resource_rules(libnvml: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libnvml, host, resources=[{"name": "nvidia.com/a100", "models": ["*A100*"]}])
    assert [d.resource for d in backend.devices()] == ["krakenplug.pcl.ac.cn/nvidia", "nvidia.com/a100"]
    backend.close()


def test_allocate_gives_uuids_and_present_device_files(backend: NvidiaBackend, host: FakeHost) -> None:
    allocation = backend.allocate(backend.devices())
    assert allocation.envs == {"NVIDIA_VISIBLE_DEVICES": f"{UUID0},{UUID1}"}
    assert [(n.host_path, n.container_path) for n in allocation.device_nodes] == host.node_paths(
        "nvidia0", "nvidia3", "nvidiactl", "nvidia-uvm")  # nvidia-uvm-tools is absent from the fake /dev


def test_samples_convert_units(backend: NvidiaBackend) -> None:
    assert backend.sample(backend.devices()[0]) == base.DeviceSample(
        utilization_percent=88.0, memory_used_mb=2048.0, memory_total_mb=81559.0, temperature_celsius=61.0,
        power_watts=312.456, memory_reserved_mb=0.0)  # NVML: bytes and milliwatts


def test_memory_used_leaves_out_the_drivers_reserve(backend: NvidiaBackend, fixture: Fixture) -> None:
    # v1 nvmlDeviceGetMemoryInfo would say used = 512 + 2048; v2 reports the reserve apart.
    fixture.update({"dev0.memory_reserved_mb": 512})
    sample = backend.sample(backend.devices()[0])
    assert (sample.memory_used_mb, sample.memory_reserved_mb, sample.memory_total_mb) == (2048.0, 512.0, 81559.0)
    assert "memory v2" in backend.library_info().path


@pytest.mark.parametrize("code", [3, 4])  # NOT_SUPPORTED (integrated SoC GPU), NO_PERMISSION
def test_gpu_without_memory_info_is_listed_with_memory_unknown(backend: NvidiaBackend, fixture: Fixture,
                                                                code: int) -> None:
    fixture.update({"fail.nvmlDeviceGetMemoryInfo_v2.1": code, "fail.nvmlDeviceGetMemoryInfo.1": code})
    gpu = devices_by_id(backend)[UUID1]
    assert (gpu.healthy, gpu.memory_total_mb) == (True, 0)  # 0: unknown to the device model
    sample = backend.sample(gpu)
    assert (sample.memory_used_mb, sample.memory_total_mb, sample.memory_reserved_mb) == (None, None, None)


def test_driver_version(backend: NvidiaBackend) -> None:
    assert backend.driver_version() == "550.54.15"


def test_fatal_xid_marks_its_gpu_until_queries_answer_again(libnvml: Path, fixture: Fixture,
                                                             host: FakeHost) -> None:
    backend = open_backend(libnvml, host, health_poll_interval_seconds=0.1)
    with closing(backend), Watch(backend) as watch:
        # The recovery probe (memory + utilization queries) fails until the test lets it succeed.
        fixture.update({"fail.nvmlDeviceGetUtilizationRates.0": 15, "event.1": f"0:{XID_EVENT}:79"})
        assert watch.changed()
        devices = devices_by_id(backend)
        assert (devices[UUID0].health, devices[UUID0].health_reason) == (base.Health.UNHEALTHY, "XID 79")
        assert devices[UUID1].healthy
        fixture.remove("fail.nvmlDeviceGetUtilizationRates.0")
        assert watch.changed()  # recovered: queries succeed and no new XID for an interval
        assert devices_by_id(backend)[UUID0].healthy


def test_ignored_and_non_fatal_events_change_nothing(libnvml: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libnvml, host, health_poll_interval_seconds=30)
    with closing(backend), Watch(backend) as watch:
        # Events arrive in sequence order; the change comes from the last one only.
        fixture.update({"event.1": f"0:{XID_EVENT}:43", "event.2": f"0:{DOUBLE_BIT_ECC}:0",
                        "event.3": f"1:{XID_EVENT}:48"})
        assert watch.changed()
        devices = devices_by_id(backend)
        assert devices[UUID0].healthy
        assert devices[UUID1].health_reason == "XID 48"


def test_fatal_xids_option_limits_what_acts(libnvml: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libnvml, host, fatal_xids=[48], health_poll_interval_seconds=30)
    with closing(backend), Watch(backend) as watch:
        fixture.update({"event.1": f"0:{XID_EVENT}:79", "event.2": f"1:{XID_EVENT}:48"})
        assert watch.changed()
        devices = devices_by_id(backend)
        assert devices[UUID0].healthy and devices[UUID1].health_reason == "XID 48"


def test_event_without_device_marks_every_gpu(libnvml: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libnvml, host, health_poll_interval_seconds=30)
    with closing(backend), Watch(backend) as watch:
        fixture.update({"event.1": f"-1:{XID_EVENT}:999"})
        assert watch.changed()
        assert [d.health_reason for d in backend.devices()] == ["XID 999", "XID 999"]


def test_event_wait_error_marks_all_then_recovers(libnvml: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libnvml, host, health_poll_interval_seconds=0.1)
    with closing(backend), Watch(backend) as watch:
        fixture.update({"fail.nvmlEventSetWait_v2": 999})
        assert watch.changed()
        assert {d.health_reason for d in backend.devices()} == {"nvmlEventSetWait_v2 failed: NVML_ERROR_UNKNOWN (999)"}
        fixture.remove("fail.nvmlEventSetWait_v2")
        while not all(d.healthy for d in backend.devices()):
            assert watch.changed(), "the GPUs never recovered after the event set worked again"


def test_health_checks_off_ignores_xids_but_not_failing_queries(libnvml: Path, fixture: Fixture,
                                                                 host: FakeHost) -> None:
    backend = open_backend(libnvml, host, health_checks=False, health_poll_interval_seconds=0.05)
    fixture.update({"event.1": f"0:{XID_EVENT}:79"})
    with closing(backend), Watch(backend):  # returns at once: the device hub re-reads devices() itself
        backend.devices()
        fixture.update({"dev0.fail": 15})
        assert "NVML_ERROR_GPU_IS_LOST (15)" in devices_by_id(backend)[UUID0].health_reason
        fixture.remove("dev0.fail")
        assert devices_by_id(backend)[UUID0].healthy  # the pending XID was never read


def test_failed_query_keeps_identity_and_recovers(backend: NvidiaBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"dev1.fail": 15})
    lost = devices_by_id(backend)[UUID1]
    assert (lost.health, lost.model, lost.index) == (base.Health.UNHEALTHY, "NVIDIA A100-SXM4-40GB", 1)
    assert lost.health_reason == "nvmlDeviceGetHandleByIndex failed: NVML_ERROR_GPU_IS_LOST (15)"
    fixture.remove("dev1.fail")
    assert devices_by_id(backend)[UUID1].healthy


def test_hanging_call_is_bounded_and_marks_only_that_gpu(libnvml: Path, fixture: Fixture,
                                                         host: FakeHost) -> None:
    backend = open_backend(libnvml, host, call_timeout_seconds=0.3)
    backend.devices()
    expect_bounded_hang(backend, fixture, hang="hang.nvmlDeviceGetMemoryInfo_v2.1", seconds=3, device_id=UUID1,
                        reason="nvmlDeviceGetMemoryInfo(device 1) did not return within 0.3 s")
    backend.close()


def test_init_failure_is_unavailable_with_the_nvml_error_name(libnvml: Path, fixture: Fixture,
                                                              host: FakeHost) -> None:
    fixture.update({"init_error": 9})
    with pytest.raises(errors.BackendUnavailable, match=r"nvmlInit .* NVML_ERROR_DRIVER_NOT_LOADED \(9\)"):
        open_backend(libnvml, host)


@pytest.mark.parametrize("fail_on_init_error", [False, True])
def test_open_backend_degrades_or_fails_on_init_error(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                      clean_env: None, fail_on_init_error: bool) -> None:
    fixture.update({"init_error": 18})
    expect_init_error_handled("nvidia", {"library_path": str(libnvml), **host.options},
                              fail_on_init_error=fail_on_init_error, match="NVML_ERROR_LIB_RM_VERSION_MISMATCH")


def test_library_is_found_under_driver_root(libnvml: Path, fixture: Fixture, host: FakeHost,
                                            tmp_path: Path) -> None:
    driver_root = tmp_path / "driver"
    with pytest.raises(errors.BackendUnavailable, match="usr/lib64/libnvidia-ml.so.1: no such file"):
        open_backend(None, host, driver_root=str(driver_root))
    (driver_root / "usr" / "lib64").mkdir(parents=True)
    shutil.copy(libnvml, driver_root / "usr" / "lib64" / "libnvidia-ml.so.1")
    backend = open_backend(None, host, driver_root=str(driver_root))
    assert [d.id for d in backend.devices()] == [UUID0, UUID1]
    backend.close()


def test_xid_recovery_rule_needs_a_quiet_interval_and_answering_queries() -> None:
    marks = xid.XidMarks(xid.XidPolicy(ignored=[13], fatal=[]))
    assert not marks.on_event(["g0"], XID_EVENT, 13)
    assert marks.on_event(["g0"], XID_EVENT, 79)
    assert not marks.recover(quiet_seconds=3600, healthy=lambda uuid: True)  # too recent
    assert not marks.recover(quiet_seconds=0, healthy=lambda uuid: False)  # queries still fail
    assert marks.reason("g0") == "XID 79"
    assert marks.recover(quiet_seconds=0, healthy=lambda uuid: True)
    assert marks.reason("g0") is None


MISSING_SYMBOL_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    from krakenplug.backends.nvidia import NvidiaBackend, NvidiaOptions
    backend = NvidiaBackend(NvidiaOptions(library_path=sys.argv[1], dev_root=sys.argv[2], sysfs_root=sys.argv[3]))
    backend.open()
    print(json.dumps({**dataclasses.asdict(backend.sample(backend.devices()[0])),
                      "path": backend.library_info().path}))
    backend.close()
""")


def test_missing_symbols_read_as_not_offered(fakelib_dir: Path, fixture: Fixture, host: FakeHost) -> None:
    # Another NVML build cannot be loaded into this process (pynvml keeps the first), so this runs apart.
    # An older library: no power, no temperature, no v2 memory call (v1's used includes the reserve).
    fixture.update({"dev0.memory_reserved_mb": 512})
    library = NVML.build(fakelib_dir / "nvml-minimal", omit=["nvmlDeviceGetPowerUsage", "nvmlDeviceGetTemperature",
                                                           "nvmlDeviceGetMemoryInfo_v2"])
    result = subprocess.run([sys.executable, "-c", MISSING_SYMBOL_SCRIPT, str(library), str(host.dev),
                             str(host.sysfs)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"utilization_percent": 88.0, "memory_used_mb": 2560.0,
                                         "memory_total_mb": 81559.0, "temperature_celsius": None,
                                         "power_watts": None, "memory_reserved_mb": None,
                                         "path": "pynvml; memory v1; mig_strategy=none"}


def test_cli_devices_json(libnvml: Path, fixture: Fixture, host: FakeHost) -> None:
    rows = devices_json("nvidia", library_path=libnvml, **host.options)
    assert [(r["id"], r["model"], r["memory_total_mb"], r["numa_node"], r["pci_bus_id"], r["health"])
            for r in rows] == [
        (UUID0, "NVIDIA H100 80GB HBM3", 81559, 0, "0000:3b:00.0", "Healthy"),
        (UUID1, "NVIDIA A100-SXM4-40GB", 40960, 1, "0000:af:00.0", "Healthy")]


def test_xid_lists_accept_comma_separated_strings_and_name_bad_values(clean_env: None) -> None:
    def create(**nvidia: object):
        return backends.create(settings.load(overrides={"backend": "nvidia", "backends": {"nvidia": nvidia}}))

    options = NvidiaOptions.model_validate({"ignored_xids": "13, 31", "fatal_xids": "48,79"})
    assert (options.ignored_xids, options.fatal_xids) == ([13, 31], [48, 79])
    assert isinstance(create(ignored_xids="13"), NvidiaBackend)
    with pytest.raises(errors.ConfigError, match=r"backends\.nvidia\.ignored_xids.*'x'"):
        create(ignored_xids="13,x")

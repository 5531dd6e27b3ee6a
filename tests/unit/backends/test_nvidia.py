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
from fakenvml import H100, PROFILE_1G, PROFILE_3G, h100, mig_fields
from fakenvml import add_mig_capabilities as add_capability_files

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


def test_versions_are_read_once_per_nvml_session(backend: NvidiaBackend, fixture: Fixture) -> None:
    assert backend.driver_version() == "550.54.15"
    assert "NVML 12.550.54.15" in backend.library_info().api
    fixture.update({"driver_version": "560.28.03", "nvml_version": "12.560.28.03"})
    assert backend.driver_version() == "550.54.15"  # not asked again on every scrape
    assert "NVML 12.550.54.15" in backend.library_info().api
    backend.close()
    backend.open()  # a new session (the driver may have been upgraded): asked again
    assert backend.driver_version() == "560.28.03"
    assert "NVML 12.560.28.03 (driver 560.28.03)" in backend.library_info().api


def test_a_failed_version_read_is_tried_again(backend: NvidiaBackend, fixture: Fixture) -> None:
    backend.close()
    fixture.update({"fail.nvmlSystemGetDriverVersion": 999})
    backend.open()
    assert backend.driver_version() is None
    fixture.update({"fail.nvmlSystemGetDriverVersion": 0})
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
    assert rows[0]["library"] == {"library": str(libnvml), "api": "NVML 12.550.54.15 (driver 550.54.15)",
                                  "path": "pynvml; memory v2; mig_strategy=none", "reason": ""}


def test_xid_lists_accept_comma_separated_strings_and_name_bad_values(clean_env: None) -> None:
    def create(**nvidia: object):
        return backends.create(settings.load(overrides={"backend": "nvidia", "backends": {"nvidia": nvidia}}))

    options = NvidiaOptions.model_validate({"ignored_xids": "13, 31", "fatal_xids": "48,79"})
    assert (options.ignored_xids, options.fatal_xids) == ([13, 31], [48, 79])
    assert isinstance(create(ignored_xids="13"), NvidiaBackend)
    with pytest.raises(errors.ConfigError, match=r"backends\.nvidia\.ignored_xids.*'x'"):
        create(ignored_xids="13,x")


# -- XID events by UUID ------------------------------------------------------------------------------


def test_xid_finds_its_gpu_by_uuid_after_nvml_renumbers(libnvml: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = open_backend(libnvml, host, health_poll_interval_seconds=30)
    with closing(backend), Watch(backend) as watch:
        # GPU 0 falls off the bus: NVML now lists only GPU 1, at index 0 (same handle slot as GPU 0 had).
        fixture.replace_devices([{key.split(".", 1)[1]: value for key, value in fixture.values.items()
                                  if key.startswith("dev1.")}])
        fixture.update({"event.1": f"0:{XID_EVENT}:79"})
        assert watch.changed()
        devices = devices_by_id(backend)
        assert devices[UUID1].health_reason == "XID 79"  # the event named GPU 1 by its UUID
        assert devices[UUID0].health_reason == "NVML no longer lists this GPU"


def test_gpu_that_appears_later_gets_xid_events(libnvml: Path, fixture: Fixture, host: FakeHost) -> None:
    fixture.update({"count": 1})
    backend = open_backend(libnvml, host, health_poll_interval_seconds=0.1)
    with closing(backend), Watch(backend) as watch:
        fixture.update({"count": 2})
        assert UUID1 in devices_by_id(backend)  # the device hub's next read lists it
        # The watcher registers it at its next interval; NVML drops events of unregistered GPUs, so the
        # XID is sent again until one arrives.
        for sequence in range(1, 60):
            fixture.update({f"event.{sequence}": f"1:{XID_EVENT}:79"})
            if watch.changes.acquire(timeout=0.5) and devices_by_id(backend)[UUID1].health_reason == "XID 79":
                break
        else:
            pytest.fail("GPU 1, which appeared after the watcher started, never got its XID")
        assert devices_by_id(backend)[UUID0].healthy


def test_a_failed_event_registration_is_tried_again(libnvml: Path, fixture: Fixture, host: FakeHost) -> None:
    fixture.update({"fail.nvmlDeviceRegisterEvents.1": 999})  # NVML_ERROR_UNKNOWN, once at start
    backend = open_backend(libnvml, host, health_poll_interval_seconds=0.1)
    with closing(backend), Watch(backend) as watch:
        fixture.update({"fail.nvmlDeviceRegisterEvents.1": 0})
        # NVML drops events of unregistered GPUs: the XID is sent again until the retried registration
        # lets one through.
        for sequence in range(1, 60):
            fixture.update({f"event.{sequence}": f"1:{XID_EVENT}:79"})
            if watch.changes.acquire(timeout=0.5) and devices_by_id(backend)[UUID1].health_reason == "XID 79":
                break
        else:
            pytest.fail("GPU 1, whose first event registration failed, never got its XID")


def test_xid_of_a_gpu_the_backend_does_not_list_is_ignored(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    fixture.update({"fail.nvmlDeviceGetName.1": 999})  # GPU 1 never answers: it is not advertised
    backend = open_backend(libnvml, host, health_poll_interval_seconds=0.1)
    with closing(backend), Watch(backend) as watch, caplog.at_level("INFO", logger="krakenplug.backends.nvidia"):
        fixture.update({"event.1": f"1:{XID_EVENT}:79", "event.2": f"0:{XID_EVENT}:48"})
        # Event 2 arrives after event 1, which must have marked nothing (GPU 0 would read "XID 79").
        watch.expect_change(lambda: devices_by_id(backend)[UUID0].health_reason == "XID 48")
        assert [d.id for d in backend.devices()] == [UUID0]
    assert f"ignoring XID 79 of GPU {UUID1}" in caplog.text


def test_mig_enabled_gpu_recovers_although_utilization_is_not_supported(libnvml: Path, fixture: Fixture,
                                                                        host: FakeHost) -> None:
    # nvml.h: "On MIG-enabled GPUs, querying device utilization rates is not currently supported."
    fixture.update({"dev0.mig_mode": 1})
    backend = open_backend(libnvml, host, health_poll_interval_seconds=0.1)  # mig_strategy none: GPU whole
    with closing(backend), Watch(backend) as watch:
        fixture.update({"event.1": f"0:{XID_EVENT}:79"})
        watch.expect_change(lambda: devices_by_id(backend)[UUID0].health_reason == "XID 79")
        watch.expect_change(lambda: devices_by_id(backend)[UUID0].healthy)
        assert backend.sample(devices_by_id(backend)[UUID0]).utilization_percent is None


# -- MIG ----------------------------------------------------------------------------------------------

MIG_A = "MIG-1a2b3c4d-0000-5000-8000-000000000001"
MIG_B = "MIG-1a2b3c4d-0000-5000-8000-000000000002"
MIG_C = "MIG-1a2b3c4d-0000-5000-8000-000000000003"
MIG_D = "MIG-1a2b3c4d-0000-5000-8000-000000000004"


def mig_gpus(gpu0: dict[str, object], gpu1: dict[str, object]) -> list[dict[str, object]]:
    return [h100(UUID0, "0000:3b:00.0", 0, **gpu0), h100(UUID1, "0000:af:00.0", 3, **gpu1)]


# GPU 0: a 3g.40gb (GI 1) and, at MIG index 2 (index 1 is a hole), a 1g.10gb (GI 9); GPU 1 MIG off.
MIXED = mig_gpus(mig_fields((0, MIG_A, 1, 0, PROFILE_3G), (2, MIG_B, 9, 0, PROFILE_1G)), {"mig_mode": 0})
# Both GPUs: two 3g.40gb each.
UNIFORM = mig_gpus(mig_fields((0, MIG_A, 1, 0, PROFILE_3G), (1, MIG_B, 2, 0, PROFILE_3G)),
                   mig_fields((0, MIG_C, 1, 0, PROFILE_3G), (1, MIG_D, 2, 0, PROFILE_3G)))


def add_mig_capabilities(host: FakeHost, proc: Path, gpu_minor: int, gi: int, ci: int, minors: tuple[int, int]) -> None:
    add_capability_files(host.dev, proc, gpu_minor, gi, ci, minors)


@pytest.fixture
def proc(tmp_path: Path, host: FakeHost) -> Path:
    root = tmp_path / "proc"
    add_mig_capabilities(host, root, 0, 1, 0, (12, 13))
    add_mig_capabilities(host, root, 0, 9, 0, (84, 85))
    return root


def open_mig(libnvml: Path, host: FakeHost, proc: Path, strategy: str, **options: object) -> NvidiaBackend:
    return open_backend(libnvml, host, mig_strategy=strategy, proc_root=str(proc), **options)


def test_mig_strategy_none_advertises_mig_gpus_whole(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                     proc: Path) -> None:
    fixture.replace_devices(MIXED)
    with closing(open_mig(libnvml, host, proc, "none")) as backend:
        assert [(d.id, d.resource, d.partition) for d in backend.devices()] == [
            (UUID0, "krakenplug.pcl.ac.cn/nvidia", None), (UUID1, "krakenplug.pcl.ac.cn/nvidia", None)]


def test_mig_strategy_mixed_one_resource_per_profile(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                     proc: Path) -> None:
    fixture.replace_devices(MIXED)
    with closing(open_mig(libnvml, host, proc, "mixed")) as backend:
        rows = [(d.id, d.index, d.model, d.memory_total_mb, d.resource, d.partition, d.numa_node, d.healthy)
                for d in backend.devices()]
    assert rows == [
        (UUID1, 1, H100, 81559, "krakenplug.pcl.ac.cn/nvidia", None, 1, True),
        (MIG_A, 1000, f"{H100} MIG 3g.40gb", 40448, "krakenplug.pcl.ac.cn/nvidia-mig-3g.40gb", "mig-3g.40gb", 0, True),
        (MIG_B, 1002, f"{H100} MIG 1g.10gb", 9856, "krakenplug.pcl.ac.cn/nvidia-mig-1g.10gb", "mig-1g.10gb", 0, True),
    ]


def test_mig_devices_name_their_gpu_and_its_share_for_dra_counters(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                                   proc: Path) -> None:
    fixture.replace_devices(MIXED)
    with closing(open_mig(libnvml, host, proc, "mixed")) as backend:
        devices = {d.id: d for d in backend.devices()}
    whole, mig_a, mig_b = devices[UUID1], devices[MIG_A], devices[MIG_B]
    assert whole.parent is None and whole.consumes == ()  # MIG off: an ordinary device
    assert mig_a.parent == mig_b.parent
    parent = mig_a.parent
    assert parent is not None
    assert (parent.id, parent.index, parent.model, parent.memory_total_mb, parent.pci_bus_id) == (
        UUID0, 0, H100, 81559, "0000:3b:00.0")
    assert dict(parent.counters) == {"partitions": 2, "memory": 81559}
    assert dict(mig_a.consumes) == {"partitions": 1, "memory": 40448}
    assert dict(mig_b.consumes) == {"partitions": 1, "memory": 9856}


def test_mig_mixed_resources_follow_rules_and_prefix(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                     proc: Path) -> None:
    fixture.replace_devices(MIXED)
    rules = [{"name": "example.com/small-slice", "models": ["*MIG 1g.*"]}]
    with closing(open_mig(libnvml, host, proc, "mixed", resources=rules, mig_resource_prefix="nvidia.com/mig-",
                          resource_name="nvidia.com/gpu")) as backend:
        assert {d.id: d.resource for d in backend.devices()} == {
            UUID1: "nvidia.com/gpu", MIG_A: "nvidia.com/mig-3g.40gb", MIG_B: "example.com/small-slice"}
    with pytest.raises(ValueError, match="(?s)mig_resource_prefix.*'no-slash-'"):
        NvidiaOptions(mig_resource_prefix="no-slash-")


def test_mig_strategy_single_uses_the_vendor_resource(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                      proc: Path) -> None:
    fixture.replace_devices(UNIFORM)
    add_mig_capabilities(host, proc, 0, 2, 0, (21, 22))
    add_mig_capabilities(host, proc, 3, 1, 0, (30, 31))
    add_mig_capabilities(host, proc, 3, 2, 0, (39, 40))
    with closing(open_mig(libnvml, host, proc, "single")) as backend:
        devices = backend.devices()
    assert [(d.id, d.resource, d.healthy) for d in devices] == [
        (uuid, "krakenplug.pcl.ac.cn/nvidia", True) for uuid in (MIG_A, MIG_B, MIG_C, MIG_D)]


@pytest.mark.parametrize("layout, found", [
    (MIXED, "found GPU 0: 1g.10gb, 3g.40gb; GPU 1: MIG disabled"),
    (mig_gpus(mig_fields((0, MIG_A, 1, 0, PROFILE_3G)), mig_fields((0, MIG_C, 1, 0, PROFILE_1G))),
     "found GPU 0: 3g.40gb; GPU 1: 1g.10gb"),
])
def test_mig_strategy_single_refuses_other_layouts(libnvml: Path, fixture: Fixture, host: FakeHost, proc: Path,
                                                   caplog: pytest.LogCaptureFixture, layout: list, found: str) -> None:
    fixture.replace_devices(layout)
    with closing(open_mig(libnvml, host, proc, "single")) as backend:
        assert backend.devices() == []
        assert found in backend.library_info().reason  # krakenplug devices shows it
    assert "mig_strategy=single needs every GPU MIG-enabled with MIG devices of one profile" in caplog.text
    assert found in caplog.text


def test_mig_strategy_single_without_mig_is_none(libnvml: Path, fixture: Fixture, host: FakeHost, proc: Path) -> None:
    with closing(open_mig(libnvml, host, proc, "single")) as backend:
        assert [d.id for d in backend.devices()] == [UUID0, UUID1]


def test_allocate_mig_devices_hands_capability_nodes_and_mig_uuids(libnvml: Path, fixture: Fixture,
                                                                   host: FakeHost, proc: Path) -> None:
    fixture.replace_devices(MIXED)
    with closing(open_mig(libnvml, host, proc, "mixed")) as backend:
        devices = devices_by_id(backend)
        allocation = backend.allocate([devices[MIG_A], devices[MIG_B]])
    assert allocation.envs == {"NVIDIA_VISIBLE_DEVICES": f"{MIG_A},{MIG_B}"}
    assert [(n.host_path, n.container_path) for n in allocation.device_nodes] == host.node_paths(
        "nvidia0", "nvidia-caps/nvidia-cap12", "nvidia-caps/nvidia-cap13", "nvidia-caps/nvidia-cap84",
        "nvidia-caps/nvidia-cap85", "nvidiactl", "nvidia-uvm")


def test_mig_capability_minors_from_mig_minors_when_access_files_are_unreadable(
        libnvml: Path, fixture: Fixture, host: FakeHost, tmp_path: Path) -> None:
    fixture.replace_devices(MIXED)
    proc = tmp_path / "proc-minors"
    (proc / "driver" / "nvidia-caps").mkdir(parents=True)
    (proc / "driver" / "nvidia-caps" / "mig-minors").write_text(
        "config 1\nmonitor 2\ngpu0/gi1/access 12\ngpu0/gi1/ci0/access 13\n")
    make_caps = host.dev / "nvidia-caps"
    make_caps.mkdir(exist_ok=True)
    for minor in (12, 13):
        (make_caps / f"nvidia-cap{minor}").write_text("")
    with closing(open_mig(libnvml, host, proc, "mixed")) as backend:
        devices = devices_by_id(backend)
    assert [n.container_path for n in devices[MIG_A].device_nodes] == [
        "/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap13"]
    assert not devices[MIG_B].healthy and "MIG capability device missing" in devices[MIG_B].health_reason


def test_mig_device_samples_report_only_what_nvml_offers(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                         proc: Path) -> None:
    fixture.replace_devices(MIXED)
    fixture.update({"dev0.mig0.memory_used_mb": 1024})
    with closing(open_mig(libnvml, host, proc, "mixed")) as backend:
        sample = backend.sample(devices_by_id(backend)[MIG_A])
    assert sample == base.DeviceSample(memory_used_mb=1024.0, memory_total_mb=40448.0, memory_reserved_mb=0.0)


def test_mig_device_without_memory_permission_stays_listed(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                           proc: Path) -> None:
    fixture.replace_devices(MIXED)
    fixture.update({"fail.nvmlDeviceGetMemoryInfo_v2.mig0.0": 4, "fail.nvmlDeviceGetMemoryInfo.mig0.0": 4})
    with closing(open_mig(libnvml, host, proc, "mixed")) as backend:
        device = devices_by_id(backend)[MIG_A]
        assert (device.healthy, device.memory_total_mb) == (True, 40448)  # from nvmlDeviceGetAttributes_v2
        assert backend.sample(device).memory_used_mb is None


def test_xid_on_a_mig_device_marks_that_gpu_and_compute_instance(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                                 proc: Path) -> None:
    fixture.replace_devices(MIXED)
    backend = open_mig(libnvml, host, proc, "mixed", health_poll_interval_seconds=30)
    with closing(backend), Watch(backend) as watch:
        fixture.update({"event.1": f"0:{XID_EVENT}:94:9:0"})  # GI 9, CI 0: MIG_B
        watch.expect_change(lambda: devices_by_id(backend)[MIG_B].health_reason == "XID 94")
        assert devices_by_id(backend)[MIG_A].healthy
        fixture.update({"event.2": f"0:{XID_EVENT}:79"})  # the whole GPU
        watch.expect_change(lambda: devices_by_id(backend)[MIG_A].health_reason == "XID 79")
        assert devices_by_id(backend)[UUID1].healthy


def test_failing_mig_gpu_keeps_its_mig_devices_unhealthy(libnvml: Path, fixture: Fixture, host: FakeHost,
                                                         proc: Path) -> None:
    fixture.replace_devices(MIXED)
    with closing(open_mig(libnvml, host, proc, "mixed")) as backend:
        backend.devices()
        fixture.update({"dev0.fail": 15})
        devices = devices_by_id(backend)
        assert {uuid: devices[uuid].healthy for uuid in (MIG_A, MIG_B, UUID1)} == {
            MIG_A: False, MIG_B: False, UUID1: True}
        assert UUID0 not in devices  # the GPU is not advertised whole because it is failing
        fixture.remove("dev0.fail")
        assert all(d.healthy for d in backend.devices())


def test_mig_profile_names_follow_nvidia() -> None:
    h100 = 81559 * 1024 * 1024
    assert [mig.profile_name(g, c, mb, h100) for g, c, mb in
            [(1, 1, 9856), (2, 2, 20096), (3, 3, 40448), (3, 1, 40448), (7, 7, 80896)]] == [
        "1g.10gb", "2g.20gb", "3g.40gb", "1c.3g.40gb", "7g.80gb"]
    a100 = 40536 * 1024 * 1024
    assert [mig.profile_name(g, g, mb, a100) for g, mb in [(1, 4864), (3, 20096)]] == ["1g.5gb", "3g.20gb"]


def test_discovery_counts_mig_profiles(libnvml: Path, fixture: Fixture, host: FakeHost, proc: Path) -> None:
    fixture.replace_devices(MIXED)
    with closing(open_mig(libnvml, host, proc, "mixed")) as backend:
        found = labels.labels_for(backend.devices())
    assert (found["krakenplug.pcl.ac.cn/nvidia.mig-3g.40gb.count"],
            found["krakenplug.pcl.ac.cn/nvidia.mig-1g.10gb.count"]) == ("1", "1")


# -- preferred allocation ------------------------------------------------------------------------------


def four_gpus(**topology: object) -> list[dict[str, object]]:
    """GPUs 0 and 1 on NUMA node 0, 2 and 3 on node 1 (see the ``host4`` fixture)."""
    return [{"uuid": f"GPU-0000000{i}-0000-4000-8000-000000000000", "bus_id": f"0000:{0x18 + i:02x}:00.0",
             "minor": i, **{key[5:]: value for key, value in topology.items() if key.startswith(f"dev{i}_")}}
            for i in range(4)]


@pytest.fixture
def host4(tmp_path: Path) -> FakeHost:
    return fake_host(tmp_path / "four", [f"nvidia{i}" for i in range(4)],
                     {f"0000:{0x18 + i:02x}:00.0": i // 2 for i in range(4)})


def test_preferred_allocation_prefers_nvlink_over_numa(libnvml: Path, fixture: Fixture, host4: FakeHost) -> None:
    # NVLink bridges join 0-2 and 1-3, across NUMA nodes; NUMA packing alone would pick 0 and 1.
    fixture.replace_devices(four_gpus(dev0_nvlinks="2,2", dev2_nvlinks="0,0", dev1_nvlinks="3", dev3_nvlinks="1"))
    with closing(open_backend(libnvml, host4)) as backend:
        devices = backend.devices()
        assert backend.preferred_allocation(devices, [], 2) == [devices[0].id, devices[2].id]
        assert backend.preferred_allocation(devices, [devices[1]], 2) == [devices[1].id, devices[3].id]
        assert backend.preferred_allocation(devices[1:], [], 2) == [devices[1].id, devices[3].id]


def test_preferred_allocation_without_nvlink_uses_the_common_ancestor(libnvml: Path, fixture: Fixture,
                                                                      host4: FakeHost) -> None:
    fixture.replace_devices(four_gpus())
    fixture.update({"topo.0.3": 10, "topo.1.2": 40})  # 0 and 3 share a PCIe switch
    with closing(open_backend(libnvml, host4)) as backend:
        devices = backend.devices()
        assert backend.preferred_allocation(devices, [], 2) == [devices[0].id, devices[3].id]
        assert backend.preferred_allocation(devices, [devices[1]], 2) == [devices[1].id, devices[2].id]
        assert isinstance(backend, base.SupportsPreferredAllocation)


def test_library_info_names_nvml_and_the_driver(backend: NvidiaBackend, libnvml: Path) -> None:
    info = backend.library_info()
    assert (info.library, info.api) == (str(libnvml), "NVML 12.550.54.15 (driver 550.54.15)")


def test_one_failing_query_reads_as_absent_and_the_gpu_stays_served(backend: NvidiaBackend,
                                                                    fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"fail.nvmlDeviceGetTemperature.0": 999, "fail.nvmlDeviceGetPciInfo_v3.0": 999,
                    "fail.nvmlDeviceGetMemoryInfo_v2.0": 999})
    gpu = devices_by_id(backend)[UUID0]
    assert (gpu.healthy, gpu.pci_bus_id, gpu.numa_node, gpu.memory_total_mb) == (True, None, None, 81559)
    sample = backend.sample(gpu)
    assert (sample.temperature_celsius, sample.memory_used_mb, sample.utilization_percent) == (None, None, 88.0)

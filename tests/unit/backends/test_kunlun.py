"""The Kunlun backend through its real ctypes binding against a fake libxpuml.so.1 compiled by the test run."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakelib import (
    XPUML,
    FakeHost,
    FakeKernel,
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
    opened,
    vf_bus_id,
    xpuml_lists_vfs,
)

from krakenplug import cli, errors
from krakenplug import resource_names as names
from krakenplug.backends import base, create
from krakenplug.backends.kunlun import KunlunBackend, KunlunOptions, xpuml
from krakenplug.dra import slices
from krakenplug.hub import DeviceHub
from krakenplug.testing.dra_api import pool_counter_problems, slice_problems

GIB = 1 << 30
BUS0, BUS1 = "0000:3b:00.0", "0000:86:00.0"


@pytest.fixture(scope="session")
def xpuml_library(fakelib_dir: Path) -> Path:
    return XPUML.build(fakelib_dir / "xpuml")


@pytest.fixture(scope="session")
def minimal_xpuml_library(fakelib_dir: Path) -> Path:
    return XPUML.build(fakelib_dir / "xpuml-minimal",
                       omit=["xpumlDeviceGetName", "xpumlDeviceGetMinorNumber", "xpumlDeviceGetPowerUsage"])


@pytest.fixture(scope="session")
def xpuml_without_sriov_call(fakelib_dir: Path) -> Path:
    """A library without xpumlDeviceSetSriovVfNum: SR-IOV goes through sysfs."""
    return XPUML.build(fakelib_dir / "xpuml-no-sriov-call", omit=["xpumlDeviceSetSriovVfNum"])


@pytest.fixture
def fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return XPUML.fixture(tmp_path / "xpuml.fixture", fixture_values([
        {"serial": "K200SN0001", "name": "R200", "bus_id": BUS0, "minor": 0, "memory_total": 16 * GIB,
         "memory_used": 3 * GIB // 2, "util": 37, "temp": 51, "power_mw": 87500},
        {"serial": "K200SN0002", "name": "R300", "bus_id": BUS1, "minor": 1, "memory_total": 32 * GIB},
    ], driver_version="4.0.25.3"), monkeypatch)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return fake_host(tmp_path, ["xpu0", "xpu1", "xpuctrl", "null"], {BUS0: 0, BUS1: 1}, vendor=0x1D22, device=0x3684)


def make_backend(library: Path, host: FakeHost, *, sriov_writer: FakeKernel | None = None,
                 **options: object) -> KunlunBackend:
    """A Kunlun backend on the fake host; ``sriov_writer`` replaces the real sysfs writer."""
    writer = {} if sriov_writer is None else {"sriov_writer": sriov_writer}
    return KunlunBackend(KunlunOptions(library_path=str(library), **host.options, **options), node_name="node-a",
                         **writer)


@pytest.fixture
def backend(xpuml_library: Path, fixture: Fixture, host: FakeHost) -> Iterator[KunlunBackend]:
    backend = make_backend(xpuml_library, host, call_timeout_seconds=0.3)
    backend.open()
    yield backend
    backend.close()


def test_struct_layouts_match_the_128_byte_xpuml_structs() -> None:
    assert [ctypes.sizeof(s) for s in (xpuml.PciInfo, xpuml.Utilization, xpuml.Memory, xpuml.Attributes)] == [128] * 4
    assert xpuml.PciInfo.busId.offset == 24


def test_devices_are_enumerated_with_identity_memory_numa_and_nodes(backend: KunlunBackend,
                                                                    host: FakeHost) -> None:
    devices = backend.devices()

    assert [(d.id, d.index, d.model, d.memory_total_mb, d.numa_node, d.pci_bus_id) for d in devices] == [
        ("K200SN0001", 0, "R200", 16384, 0, BUS0), ("K200SN0002", 1, "R300", 32768, 1, BUS1)]
    assert all(d.vendor == "kunlun" and d.resource == "baidu.com/xpu" and d.healthy for d in devices)
    assert devices[1].device_nodes == (base.DeviceNode(str(host.dev / "xpu1"), "/dev/xpu1"),)
    assert devices[0].uuid == "K200SN0001"
    assert backend.driver_version() == "4.0.25.3"


def test_per_model_resource_names(xpuml_library: Path, fixture: Fixture, host: FakeHost) -> None:
    backend = make_backend(xpuml_library, host, resources=[{"name": "baidu.com/xpu-r300", "models": ["R3*"]}])
    with opened(backend):
        assert [d.resource for d in backend.devices()] == ["baidu.com/xpu", "baidu.com/xpu-r300"]


def test_samples_convert_bytes_to_mb_and_milliwatts_to_watts(backend: KunlunBackend) -> None:
    sample = backend.sample(backend.devices()[0])

    assert sample == base.DeviceSample(utilization_percent=37.0, memory_used_mb=1536.0, memory_total_mb=16384.0,
                                       temperature_celsius=51.0, power_watts=87.5)


def test_allocate_gives_the_device_nodes_the_control_node_and_the_indexes(backend: KunlunBackend,
                                                                          host: FakeHost) -> None:
    allocation = backend.allocate(backend.devices())

    assert allocation.envs == {"XPU_VISIBLE_DEVICES": "0,1"}
    assert [(n.host_path, n.container_path) for n in allocation.device_nodes] == host.node_paths(
        "xpu0", "xpu1", "xpuctrl")


@pytest.mark.parametrize("state, reason", [(207, "device state ERROR (207)"), (205, "device state IN_RESET (205)"),
                                           (208, "device state IN_EXCEPTION (208)"), (42, "device state unknown (42)")],
                         ids=["error", "in-reset", "in-exception", "unknown"])
def test_a_bad_state_makes_the_device_unhealthy_and_it_recovers(backend: KunlunBackend, fixture: Fixture,
                                                                state: int, reason: str) -> None:
    fixture.update({"dev1.state": state})
    device = devices_by_id(backend)["K200SN0002"]
    assert (device.health, device.health_reason) == (base.Health.UNHEALTHY, reason)

    fixture.update({"dev1.state": 201})
    assert devices_by_id(backend)["K200SN0002"].healthy


def test_a_device_whose_queries_fail_keeps_its_identity_while_unhealthy(backend: KunlunBackend,
                                                                        fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"fail.xpumlDeviceGetSerial.1": 15})

    device = devices_by_id(backend)["K200SN0002"]
    assert device.health is base.Health.UNHEALTHY
    assert device.health_reason == "xpumlDeviceGetSerial failed: XPU_IS_LOST (15)"
    assert (device.model, device.pci_bus_id) == ("R300", BUS1)

    fixture.remove("fail.xpumlDeviceGetSerial.1")
    assert devices_by_id(backend)["K200SN0002"].healthy


def test_when_listing_fails_every_known_device_is_unhealthy(backend: KunlunBackend, fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"fail.xpumlDeviceGetCount": 9})

    devices = backend.devices()
    assert [d.id for d in devices] == ["K200SN0001", "K200SN0002"]
    assert all("listing devices failed: xpumlDeviceGetCount failed: DRIVER_NOT_LOADED (9)" in d.health_reason
               for d in devices)


def test_a_missing_device_node_makes_the_device_unhealthy(backend: KunlunBackend, host: FakeHost) -> None:
    (host.dev / "xpu0").unlink()
    device = devices_by_id(backend)["K200SN0001"]
    assert device.health_reason == f"device node {host.dev / 'xpu0'} is missing"
    assert backend.allocate([device]).device_nodes == (base.DeviceNode(str(host.dev / "xpuctrl"), "/dev/xpuctrl"),)


def test_a_hanging_call_is_bounded_and_marks_only_that_device(backend: KunlunBackend, fixture: Fixture) -> None:
    expect_bounded_hang(backend, fixture, hang="hang.xpumlDeviceGetState.1", seconds=1.0, device_id="K200SN0002",
                        reason="xpumlDeviceGetState(1) did not return within 0.3 s")


def test_a_hanging_sample_marks_the_device_unhealthy_until_it_answers(backend: KunlunBackend,
                                                                      fixture: Fixture) -> None:
    expect_bounded_sample_hang(backend, fixture, backend.devices()[0], hang="hang.xpumlDeviceGetPowerUsage.0",
                               seconds=1.0, reason="xpumlDeviceGetPowerUsage(0) did not return within 0.3 s")


def test_a_missing_symbol_is_not_supported_not_a_crash(minimal_xpuml_library: Path, fixture: Fixture,
                                                       host: FakeHost) -> None:
    fixture.update({"dev0.minor": 7, "dev0.model_id": 3, "dev1.model_id": 77})
    backend = make_backend(minimal_xpuml_library, host)
    with opened(backend):
        devices = backend.devices()
        sample = backend.sample(devices[0])

    assert [d.model for d in devices] == ["R300", "Kunlun model 77"]  # from xpumlDeviceGetAttributes
    assert devices[0].device_nodes[0].container_path == "/dev/xpu0"  # no GetMinorNumber: the index
    assert sample.power_watts is None and sample.temperature_celsius == 51.0


def test_an_unsupported_metric_is_none(backend: KunlunBackend, fixture: Fixture) -> None:
    fixture.update({"fail.xpumlDeviceGetUtilizationRates": 3})
    sample = backend.sample(backend.devices()[0])
    assert sample.utilization_percent is None and sample.memory_used_mb == 1536.0


def test_init_failure_is_backend_unavailable_with_the_code_name(xpuml_library: Path, fixture: Fixture,
                                                                host: FakeHost) -> None:
    fixture.update({"init_error": 9})
    backend = make_backend(xpuml_library, host)
    with pytest.raises(errors.BackendUnavailable, match=r"xpumlInit failed: DRIVER_NOT_LOADED \(9\).*modprobe kunlun"):
        backend.open()


def test_a_missing_library_lists_what_was_tried(tmp_path: Path, host: FakeHost) -> None:
    backend = make_backend(tmp_path / "nowhere" / "libxpuml.so.1", host)
    with pytest.raises(errors.BackendUnavailable, match=r"Kunlunxin XPUML.*nowhere/libxpuml.so.1: no such file"):
        backend.open()


def test_through_open_backend_init_failure_degrades_to_zero_devices_or_raises(
        xpuml_library: Path, fixture: Fixture, host: FakeHost, clean_env: None) -> None:
    fixture.update({"init_error": 9})
    options = {"library_path": str(xpuml_library), **host.options}
    expect_init_error_handled("kunlun", options, fail_on_init_error=False)
    expect_init_error_handled("kunlun", options, fail_on_init_error=True)


def test_the_hub_sees_state_changes_in_both_directions(backend: KunlunBackend, fixture: Fixture) -> None:
    hub = DeviceHub(backend)
    hub.refresh()
    fixture.update({"dev0.state": 207})
    assert not hub.refresh().by_id["K200SN0001"].healthy
    fixture.update({"dev0.state": 201})
    assert hub.refresh().by_id["K200SN0001"].healthy


def test_close_is_idempotent_and_a_closed_backend_says_so(backend: KunlunBackend) -> None:
    backend.close()
    backend.close()
    with pytest.raises(errors.BackendUnavailable, match="not open"):
        backend.devices()


# -- SR-IOV ----------------------------------------------------------------------------------------


def test_vfs_are_advertised_instead_of_their_pf(xpuml_without_sriov_call: Path, fixture: Fixture, host: FakeHost,
                                                ) -> None:
    make_pci_device(host.sysfs, BUS0, vendor=0x1D22, device=0x3684, numa_node=0, total_vfs=3)
    make_dev_tree(host.dev, ["xpu4", "xpu5"])
    fixture.update({"count": 1})
    kernel = FakeKernel(host.sysfs,
                        on_change=xpuml_lists_vfs(fixture, BUS0, {vf_bus_id(BUS0, 0): 4, vf_bus_id(BUS0, 1): 5}))
    backend = make_backend(xpuml_without_sriov_call, host, sriov_writer=kernel)
    with opened(backend):
        backend.set_vf_count(BUS0, 2)
        devices = backend.devices()
        allocation = backend.allocate(devices[1:])

    assert kernel.writes == [(BUS0, "2")]
    assert [(d.id, d.model, d.numa_node, d.device_nodes[0].container_path) for d in devices] == [
        (vf_bus_id(BUS0, 0), "R200-VF-8G", 0, "/dev/xpu4"), (vf_bus_id(BUS0, 1), "R200-VF-8G", 0, "/dev/xpu5")]
    assert all(d.uuid is None for d in devices)  # the VFs share the card's serial: it is no UUID of theirs
    parents = {d.parent for d in devices}
    assert len(parents) == 1 and None not in parents  # both VFs are partitions of the card, for DRA's counters
    parent = devices[0].parent
    assert parent is not None and parent.pci_bus_id == BUS0 and parent.model == "R200-PF"
    assert dict(parent.counters)["partitions"] == 2
    assert [dict(d.consumes)["partitions"] for d in devices] == [1, 1]
    # as the DRA driver publishes them: the card whole (all its VFs) and each VF, one counter set
    objects = slices.build_pool(devices, driver="kunlun.krakenplug.pcl.ac.cn", node="n", generation=1).objects()
    assert all(slice_problems(o) == [] for o in objects) and pool_counter_problems(objects) == []
    published = {d["name"]: d for o in objects for d in o["spec"].get("devices", [])}
    assert set(published) == {names.dns_label(parent.id), *(names.dns_label(d.id) for d in devices)}
    assert allocation.envs == {"XPU_VISIBLE_DEVICES": "2"}
    assert [n.container_path for n in allocation.device_nodes] == ["/dev/xpu5", "/dev/xpuctrl"]


@pytest.mark.parametrize("library, path, sysfs_writes, library_line", [
    ("xpuml_library", "SR-IOV through xpumlDeviceSetSriovVfNum", [], True),
    ("xpuml_without_sriov_call", "SR-IOV through sysfs sriov_numvfs", [(BUS0, "2")], False),
], ids=["library-call", "sysfs-fallback"])
def test_set_vf_count_uses_the_library_call_where_exported_else_sysfs(
        request: pytest.FixtureRequest, fixture: Fixture, host: FakeHost, library: str, path: str,
        sysfs_writes: list[tuple[str, str]], library_line: bool) -> None:
    make_pci_device(host.sysfs, BUS0, vendor=0x1D22, device=0x3684, numa_node=0, total_vfs=3)
    kernel = FakeKernel(host.sysfs)
    backend = make_backend(request.getfixturevalue(library), host, sriov_writer=kernel)
    with opened(backend):
        backend.devices()
        backend.set_vf_count(BUS0, 2)
        assert path in backend.library_info().reason
    assert ("dev0.vf_num=2" in fixture.path.read_text().splitlines()) is library_line
    assert kernel.writes == sysfs_writes  # sysfs sriov_numvfs is not touched when the vendor's call exists


def test_the_library_call_names_its_failure(backend: KunlunBackend, host: FakeHost) -> None:
    make_pci_device(host.sysfs, BUS0, vendor=0x1D22, device=0x3684, numa_node=0, total_vfs=3)
    backend.devices()
    with pytest.raises(errors.BackendError, match=r"xpumlDeviceSetSriovVfNum\(4\) failed: .*INVALID_ARGUMENT"):
        backend.set_vf_count(BUS0, 4)


def test_a_pf_with_vfs_is_recognised_by_its_model_id_or_vxpu_mode(backend: KunlunBackend, fixture: Fixture) -> None:
    # no sysfs PF entry at all: only the library tells (the driver may not implement sriov_numvfs)
    fixture.update({"dev0.name": "R200-PF", "dev0.model_id": 200})
    assert [d.id for d in backend.devices()] == ["K200SN0002"]
    fixture.update({"dev0.model_id": 2, "dev1.vxpu_mode": 2})
    assert [d.id for d in backend.devices()] == ["K200SN0001"]
    fixture.update({"dev1.vxpu_mode": 1})  # SRIOV_OFF: capable, no VFs: advertised whole
    assert [d.id for d in backend.devices()] == ["K200SN0001", "K200SN0002"]


def test_after_renumbering_ids_stay_and_device_nodes_follow(backend: KunlunBackend, fixture: Fixture,
                                                            host: FakeHost) -> None:
    second = devices_by_id(backend)["K200SN0002"]
    assert (second.index, second.device_nodes[0].container_path) == (1, "/dev/xpu1")
    make_dev_tree(host.dev, ["xpu2", "xpu3"])
    vf = {"serial": "K200SN0001", "name": "R200-VF-8G", "model_id": 202, "memory_total": 8 * GIB}
    fixture.replace_devices([  # VFs on card 0: the driver lists them after their PF and re-numbers /dev/xpu*
        {"serial": "K200SN0001", "name": "R200-PF", "model_id": 200, "bus_id": BUS0, "minor": 0},
        {**vf, "bus_id": "0000:3b:00.1", "minor": 1}, {**vf, "bus_id": "0000:3b:00.2", "minor": 2},
        {"serial": "K200SN0002", "name": "R300", "bus_id": BUS1, "minor": 3, "memory_total": 32 * GIB}])
    allocation = backend.allocate([second])  # the device as the caller's older snapshot has it
    assert allocation.envs == {"XPU_VISIBLE_DEVICES": "3"}
    assert [n.container_path for n in allocation.device_nodes] == ["/dev/xpu3", "/dev/xpuctrl"]
    assert [d.id for d in backend.devices()] == ["0000:3b:00.1", "0000:3b:00.2", "K200SN0002"]


def test_return_code_22_is_named(backend: KunlunBackend, fixture: Fixture) -> None:
    fixture.update({"fail.xpumlDeviceGetState.0": 22})
    assert devices_by_id(backend)["K200SN0001"].health_reason == (
        "xpumlDeviceGetState failed: VXPU_ECC_NOT_SUPPORTED (22)")


def test_one_failing_query_reads_as_absent_and_the_device_is_served(backend: KunlunBackend,
                                                                    fixture: Fixture) -> None:
    fixture.update({"fail.xpumlDeviceGetPciInfo.1": 999, "fail.xpumlDeviceGetTemperature.1": 999})
    device = devices_by_id(backend)["K200SN0002"]
    assert (device.healthy, device.pci_bus_id, device.numa_node) == (True, None, None)
    sample = backend.sample(device)
    assert (sample.temperature_celsius, sample.utilization_percent) == (None, 0.0)


def test_library_info_says_the_power_unit_is_unverified(backend: KunlunBackend, xpuml_library: Path) -> None:
    info = backend.library_info()
    assert (info.library, info.api, info.path) == (str(xpuml_library), "xpuml (GetName/GetMinorNumber)", "xpuml")
    assert "power unit unverified" in info.reason


# -- CLI -------------------------------------------------------------------------------------------


def test_the_sriov_num_vfs_flag_reaches_the_backend_options(clean_env: None) -> None:
    args = cli.build_parser().parse_args(["run", "--backend", "kunlun", "--sriov-num-vfs", "2"])
    assert KunlunOptions.model_validate(cli.load_settings(args).backend_options("kunlun")).sriov_num_vfs == 2

    negative = cli.build_parser().parse_args(["run", "--backend", "kunlun", "--sriov-num-vfs", "-1"])
    with pytest.raises(errors.ConfigError, match=r"backends\.kunlun\.sriov_num_vfs.*-1"):
        create(cli.load_settings(negative))


def test_cli_devices_json_against_the_fake_library(xpuml_library: Path, fixture: Fixture,
                                                   host: FakeHost) -> None:
    rows = devices_json("kunlun", library_path=xpuml_library, **host.options)
    assert [(r["id"], r["model"], r["memory_total_mb"], r["numa_node"], r["health"], r["resource"]) for r in rows] == [
        ("K200SN0001", "R200", 16384, 0, "Healthy", "baidu.com/xpu"),
        ("K200SN0002", "R300", 32768, 1, "Healthy", "baidu.com/xpu")]

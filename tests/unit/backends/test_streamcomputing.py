"""The StreamComputing backend: sysfs and /dev trees, a fake libstcml.so compiled by the test run, and a fake
stc-smi script; plus the stc-smi parser on sample outputs of HPE 1.7 and 1.9."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakelib import (
    FAKE_STC_SMI,
    STCML,
    FakeHost,
    Fixture,
    backend_opt_flags,
    devices_json,
    expect_bounded_hang,
    expect_init_error_handled,
    fake_host,
    fixture_values,
    make_dev_tree,
    make_pci_device,
    opened,
)

from krakenplug import errors
from krakenplug.backends import base
from krakenplug.backends.streamcomputing import StreamComputingBackend, StreamComputingOptions, smi
from krakenplug.hub import DeviceHub

BUS0, BUS1 = "0000:03:00.0", "0000:65:00.0"

SMI_ONE_NPU_1_7 = """\
+------------------------------------------------------------------------------+
|    STC-SMI: 1.7.0                            Driver Version: 1.7.0           |
+------------------------------------------------------------------------------+
|  NPU        Name      Frequency|         Bus-Id        |            NPU-Util |
|  Fan        Temp          Power|   ClusterCount        |  Memory Used /Total |
+==============================================================================+
|    0     STCP920          1000M|   0000:01:00.0        |                 0 % |
|  N/A       33.6C   36.4W / 160W|              4        |     624.00M /16.00G |
+------------------------------------------------------------------------------+

+------------------------------------------------------------------------------+
| Processes:                                                                   |
|   NPU CLUSTER           Pid  processName                           MemoryUsed|
+==============================================================================+
| There is no process.                                                         |
+------------------------------------------------------------------------------+
"""

SMI_TWO_NPUS_1_9 = """\
+------------------------------------------------------------------------------+
|    STC-SMI: 1.8.4                            Driver Version: 1.9.3           |
+------------------------------------------------------------------------------+
|  NPU        Name     Frequency |         Bus-Id |                   NPU-Util |
|  Sta        Temp         Power |   ClusterCount |        Memory Used / Total |
+==============================================================================+
|    0     STCP920         1000M |      0:03:00.0 |                       25 % |
|   on         29C    30W / 160W |              4 |           1.50G / 16.00G |
+------------------------------------------------------------------------------+
|    1     STCP920         1000M |      0:65:00.0 |                      N/A   |
|  off         N/A   N/A / 160W |              4 |         624.05M / 16.00G |
+------------------------------------------------------------------------------+
+------------------------------------------------------------------------------+
| Processes:                                                                   |
|   NPU CLUSTER           Pid  processName                           MemoryUsed|
+==============================================================================+
|     0       0        583900  hello_world                               45.62K|
+------------------------------------------------------------------------------+
"""


# -- the stc-smi parser ----------------------------------------------------------------------------


def test_parse_one_npu_of_hpe_1_7() -> None:
    table = smi.parse_stc_smi(SMI_ONE_NPU_1_7)

    assert (table.smi_version, table.driver_version) == ("1.7.0", "1.7.0")
    assert table.npus == (smi.SmiReading(index=0, name="STCP920", bus_id="0000:01:00.0", utilization_percent=0.0,
                                         temperature_celsius=33.6, power_watts=36.4, memory_used_mb=624.0,
                                         memory_total_mb=16384.0),)


def test_parse_two_npus_of_hpe_1_9_with_short_bus_ids_and_n_a() -> None:
    table = smi.parse_stc_smi(SMI_TWO_NPUS_1_9)

    assert table.driver_version == "1.9.3"
    first, second = table.npus
    assert (first.bus_id, first.utilization_percent, first.temperature_celsius, first.power_watts,
            first.memory_used_mb) == (BUS0, 25.0, 29.0, 30.0, 1536.0)
    assert (second.index, second.bus_id, second.utilization_percent, second.temperature_celsius,
            second.power_watts, second.memory_used_mb) == (1, BUS1, None, None, None, 624.05)
    assert table.find(bus_id=BUS1, index=0) is second
    assert table.find(bus_id=None, index=0) is first
    assert table.find(bus_id="0000:99:00.0", index=0) is None


def test_parse_an_empty_table() -> None:
    text = SMI_ONE_NPU_1_7.split("|    0 ")[0].rstrip("\n") + "\n\n"
    assert smi.parse_stc_smi(text).npus == ()


@pytest.mark.parametrize("text, problem", [
    ("stc-smi: command failed\n", "no '+====+' line"),
    ("+=====+\n|  x  STCP920  1000M | 0000:01:00.0 | 0 % |\n|  N/A 30C 30W / 160W | 4 | 1M / 2G |\n+-----+\n",
     "no NPU index"),
    ("+=====+\n|    0     STCP920          1000M|   0000:01:00.0        |  0 % |\n+-----+\n",
     "expected 2 lines per NPU"),
], ids=["no-table", "no-index", "one-line"])
def test_unexpected_output_is_an_error_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="stc-smi output") as raised:
        smi.parse_stc_smi(text)
    assert problem in str(raised.value)


# -- the backend -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stcml_library(fakelib_dir: Path) -> Path:
    return STCML.build(fakelib_dir / "stcml")


@pytest.fixture(scope="session")
def stcml_correct_spelling(fakelib_dir: Path) -> Path:
    return STCML.build(fakelib_dir / "stcml-spelled", defines=["STC_CORRECT_SPELLING"])


@pytest.fixture(scope="session")
def stcml_minimal(fakelib_dir: Path) -> Path:
    return STCML.build(fakelib_dir / "stcml-minimal", omit=["stcmlDevcieGetHandleByPciBusId", "stcmlDeviceGetPower"])


@pytest.fixture(scope="session")
def stcml_mangled(fakelib_dir: Path) -> Path:
    """A C++ build without extern "C": none of the plain stcml* names is exported."""
    return STCML.build(fakelib_dir / "stcml-mangled", defines=["STC_CXX_NAMES"])


@pytest.fixture
def fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    # STCML lists the NPUs in the opposite order of the bus: the bus-ID lookup must be used
    return STCML.fixture(tmp_path / "stcml.fixture", fixture_values([
        {"bus_id": BUS1, "index": 1, "uuid": "UUID-B", "power": 41.25, "temp": 35.5},
        {"bus_id": BUS0, "index": 0, "uuid": "UUID-A", "power": 30.5, "temp": 31.25},
    ], driver_version="1.9.3"), monkeypatch)


@pytest.fixture
def smi_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "stc-smi.out"
    path.write_text(SMI_TWO_NPUS_1_9)
    monkeypatch.setenv("FAKE_STC_SMI_OUTPUT", str(path))
    for name in ("FAKE_STC_SMI_EXIT", "FAKE_STC_SMI_SLEEP"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    host = fake_host(tmp_path, ["stc0", "stc0c0", "stc0c1", "stc0c2", "stc0c3", "stc0ctrl",
                                "stc1", "stc1c0", "stc1c1", "stc1ctrl", "null"],
                     {BUS0: 0, BUS1: 1}, vendor=0x23E2, device=0x0100)
    make_pci_device(host.sysfs, "0000:04:00.0", vendor=0x23E2, device=0x0200)  # not an NPU we know
    make_pci_device(host.sysfs, "0000:05:00.0", vendor=0x10DE, device=0x0100)
    return host


def make_backend(host: FakeHost, library: Path | None, **options: object) -> StreamComputingBackend:
    library_path = str(library) if library else str(host.dev.parent / "no-such" / "libstcml.so")
    return StreamComputingBackend(StreamComputingOptions(
        library_path=library_path, **host.options, smi_path=str(FAKE_STC_SMI), call_timeout_seconds=0.3,
        **options), node_name="node-a")


@pytest.fixture
def backend(stcml_library: Path, fixture: Fixture, smi_output: Path,
            host: FakeHost) -> Iterator[StreamComputingBackend]:
    backend = make_backend(host, stcml_library)
    backend.open()
    yield backend
    backend.close()


def test_devices_come_from_the_pci_bus_with_stcml_details(backend: StreamComputingBackend,
                                                          host: FakeHost) -> None:
    devices = backend.devices()

    assert [(d.id, d.index, d.model, d.uuid, d.numa_node, d.memory_total_mb, d.health) for d in devices] == [
        (BUS0, 0, "STCP920", "UUID-A", 0, 16384, base.Health.HEALTHY),
        (BUS1, 1, "STCP920", "UUID-B", 1, 16384, base.Health.HEALTHY)]
    assert all(d.resource == "streamcomputing.com/npu" and d.vendor == "streamcomputing" for d in devices)
    assert [n.container_path for n in devices[1].device_nodes] == ["/dev/stc1", "/dev/stc1c0", "/dev/stc1c1",
                                                                   "/dev/stc1ctrl"]
    assert devices[1].device_nodes[0].host_path == str(host.dev / "stc1")
    assert backend.driver_version() == "1.9.3"


def test_samples_take_temperature_and_power_from_stcml_and_usage_from_stc_smi(
        backend: StreamComputingBackend) -> None:
    first, second = backend.devices()

    assert backend.sample(first) == base.DeviceSample(utilization_percent=25.0, memory_used_mb=1536.0,
                                                      memory_total_mb=16384.0, temperature_celsius=31.25,
                                                      power_watts=30.5)
    assert backend.sample(second).utilization_percent is None  # stc-smi printed N/A: absent, not 0


def test_allocate_one_npu_with_its_cluster_and_control_nodes_and_the_hpe_mount(
        backend: StreamComputingBackend, host: FakeHost) -> None:
    allocation = backend.allocate([backend.devices()[0]])

    assert allocation.envs == {"STC_VISIBLE_DEVICES": "0"}
    assert "LD_LIBRARY_PATH" not in allocation.envs
    assert [(n.host_path, n.container_path) for n in allocation.device_nodes] == host.node_paths(
        "stc0", "stc0c0", "stc0c1", "stc0c2", "stc0c3", "stc0ctrl")
    assert allocation.mounts == (base.Mount("/usr/local/hpe", "/usr/local/hpe", read_only=True),)


def test_one_npu_per_container_by_default(backend: StreamComputingBackend) -> None:
    assert isinstance(backend, base.SupportsAllocationLimit) and backend.max_devices_per_container() == 1
    with pytest.raises(errors.AllocationError, match=r"at most 1 NPU\(s\); 2 requested"):
        backend.allocate(backend.devices())


def test_the_limit_and_the_mount_are_options(stcml_library: Path, fixture: Fixture, smi_output: Path,
                                             host: FakeHost) -> None:
    backend = make_backend(host, stcml_library, max_devices_per_container=None, mount_hpe_runtime=False)
    with opened(backend):
        allocation = backend.allocate(backend.devices())
    assert backend.max_devices_per_container() is None
    assert allocation.envs == {"STC_VISIBLE_DEVICES": "0,1"} and allocation.mounts == ()


def test_board_status_off_is_unhealthy_and_recovers(backend: StreamComputingBackend, fixture: Fixture) -> None:
    fixture.update({"dev0.board": 1})
    device = backend.devices()[1]
    assert (device.health, device.health_reason) == (base.Health.UNHEALTHY, "board status off (1)")

    fixture.update({"dev0.board": 0})
    assert backend.devices()[1].healthy


def test_a_failing_npu_is_unhealthy_with_the_stcml_code_name(backend: StreamComputingBackend,
                                                             fixture: Fixture) -> None:
    backend.devices()
    fixture.update({"fail.stcmlDevcieGetHandleByPciBusId.1": -4})

    device = backend.devices()[0]
    assert (device.id, device.uuid) == (BUS0, "UUID-A")  # identity kept
    assert device.health_reason == "stcmlDevcieGetHandleByPciBusId failed: NO_DEVICE (-4)"


def test_a_failing_optional_query_reads_as_absent_and_the_npu_is_served(backend: StreamComputingBackend,
                                                                        fixture: Fixture) -> None:
    fixture.update({"fail.stcmlDeviceGetUuid.1": -1, "fail.stcmlDeviceGetSerial.1": -1,
                    "fail.stcmlDeviceGetPower.1": -6})
    npu = backend.devices()[0]  # STCML device 1 sits at BUS0
    assert (npu.id, npu.uuid, npu.healthy) == (BUS0, None, True)
    sample = backend.sample(npu)
    assert (sample.power_watts, sample.temperature_celsius) == (30.0, 31.25)  # stc-smi's power reading instead


def test_a_missing_device_node_is_unhealthy(backend: StreamComputingBackend, host: FakeHost) -> None:
    (host.dev / "stc1").unlink()
    assert backend.devices()[1].health_reason == f"device node {host.dev / 'stc1'} is missing"


def test_an_npu_gone_from_the_bus_stays_listed_as_unhealthy(backend: StreamComputingBackend,
                                                            host: FakeHost) -> None:
    backend.devices()
    (host.sysfs / "bus" / "pci" / "devices" / BUS1 / "vendor").unlink()

    gone = {d.id: d for d in backend.devices()}[BUS1]
    assert gone.health_reason == "no longer on the PCI bus"


def test_a_hanging_call_is_bounded(backend: StreamComputingBackend, fixture: Fixture) -> None:
    expect_bounded_hang(backend, fixture, hang="hang.stcmlDeviceGetBoardStatus.0", seconds=1.0, device_id=BUS1,
                        reason=f"stcmlDeviceGetBoardStatus({BUS1}) did not return within 0.3 s")


def test_the_correctly_spelled_bus_id_lookup_is_used_too(stcml_correct_spelling: Path, fixture: Fixture,
                                                         smi_output: Path, host: FakeHost) -> None:
    backend = make_backend(host, stcml_correct_spelling)
    with opened(backend):
        assert [(d.id, d.uuid) for d in backend.devices()] == [(BUS0, "UUID-A"), (BUS1, "UUID-B")]


def test_missing_symbols_fall_back_to_index_order_and_stc_smi(stcml_minimal: Path, fixture: Fixture,
                                                              smi_output: Path, host: FakeHost) -> None:
    backend = make_backend(host, stcml_minimal)
    with opened(backend):
        devices = backend.devices()
        sample = backend.sample(devices[0])
    # without the bus-ID lookup, STCML index i is taken as the i-th NPU on the bus
    assert [(d.id, d.uuid) for d in devices] == [(BUS0, "UUID-B"), (BUS1, "UUID-A")]
    assert sample.power_watts == 30.0  # no stcmlDeviceGetPower: stc-smi's reading
    assert sample.temperature_celsius == 35.5


def test_without_stcml_npus_are_served_from_sysfs_and_dev_with_stc_smi_metrics(
        smi_output: Path, host: FakeHost, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    backend = make_backend(host, None)
    with opened(backend):
        devices = backend.devices()
        sample = backend.sample(devices[0])
        version = backend.driver_version()

    assert [(d.id, d.index, d.uuid, d.healthy) for d in devices] == [(BUS0, 0, None, True), (BUS1, 1, None, True)]
    assert sample == base.DeviceSample(utilization_percent=25.0, memory_used_mb=1536.0, memory_total_mb=16384.0,
                                       temperature_celsius=29.0, power_watts=30.0)
    assert version == "1.9.3"
    assert "serving NPUs from sysfs and /dev" in caplog.text


def test_without_sysfs_or_stcml_the_dev_nodes_are_the_npus(smi_output: Path, tmp_path: Path) -> None:
    dev = make_dev_tree(tmp_path / "dev", ["stc0", "stc0ctrl", "stc2", "stc2ctrl"])
    backend = make_backend(FakeHost(dev, tmp_path / "empty-sys"), None)
    with opened(backend):
        assert [(d.id, d.index) for d in backend.devices()] == [("stc0", 0), ("stc2", 2)]


def test_no_npu_at_all_is_backend_unavailable(tmp_path: Path) -> None:
    backend = make_backend(FakeHost(make_dev_tree(tmp_path / "dev", ["null"]), tmp_path / "sys"), None)
    with pytest.raises(errors.BackendUnavailable, match="no StreamComputing NPU found"):
        backend.open()


def test_init_failure_is_backend_unavailable_and_degrades_through_open_backend(
        stcml_library: Path, fixture: Fixture, smi_output: Path, host: FakeHost, clean_env: None) -> None:
    fixture.update({"init_error": -4})
    with pytest.raises(errors.BackendUnavailable, match=r"stcmlInit failed: NO_DEVICE \(-4\)"):
        make_backend(host, stcml_library).open()

    options = {"library_path": str(stcml_library), **host.options, "smi_path": str(FAKE_STC_SMI)}
    expect_init_error_handled("streamcomputing", options, fail_on_init_error=False)
    expect_init_error_handled("streamcomputing", options, fail_on_init_error=True)


def test_stc_smi_failures_leave_usage_absent(stcml_library: Path, fixture: Fixture, smi_output: Path,
                                             host: FakeHost, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FAKE_STC_SMI_SLEEP", "30")
    backend = make_backend(host, stcml_library, smi_timeout_seconds=0.3)
    with opened(backend):
        sample = backend.sample(backend.devices()[0])

    assert (sample.utilization_percent, sample.memory_used_mb, sample.temperature_celsius) == (None, None, 31.25)
    assert "did not finish within 0.3 s" in caplog.text


def test_stc_smi_runs_in_the_background_not_per_sample(tmp_path: Path, smi_output: Path) -> None:
    poller = smi.SmiPoller(str(FAKE_STC_SMI), interval_seconds=0.05, timeout_seconds=5)
    poller.start()
    try:
        assert poller.latest().npus[0].utilization_percent == 25.0
        smi_output.write_text(SMI_TWO_NPUS_1_9.replace("25 %", "75 %"))
        deadline = threading.Event()
        for _ in range(200):
            if poller.latest().npus[0].utilization_percent == 75.0:
                break
            deadline.wait(0.05)
        assert poller.latest().npus[0].utilization_percent == 75.0
    finally:
        poller.stop()


def test_a_failing_stc_smi_is_logged_once_and_old_readings_expire(tmp_path: Path, smi_output: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    poller = smi.SmiPoller(str(FAKE_STC_SMI), interval_seconds=0.01, timeout_seconds=0.5)
    poller.refresh()
    assert poller.latest() is not None
    monkeypatch.setenv("FAKE_STC_SMI_EXIT", "3")
    for _ in range(3):
        poller.refresh()
    assert sum("exit status 3" in record.message for record in caplog.records) == 1
    threading.Event().wait(0.6)  # older than 3 intervals + the timeout
    assert poller.latest() is None


def test_the_hub_sees_a_board_going_off_and_back(backend: StreamComputingBackend, fixture: Fixture) -> None:
    hub = DeviceHub(backend)
    hub.refresh()
    fixture.update({"dev1.board": 1})
    assert not hub.refresh().by_id[BUS0].healthy
    fixture.update({"dev1.board": 0})
    assert hub.refresh().by_id[BUS0].healthy


def test_the_path_in_use_is_logged_and_reported(stcml_library: Path, fixture: Fixture, smi_output: Path,
                                                host: FakeHost, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    backend = make_backend(host, stcml_library)
    with opened(backend):
        info = backend.library_info()
    assert (info.library, info.api, info.path) == (str(stcml_library), "stcml", "stcml+sysfs+stc-smi")
    assert "stcmlInit succeeded; NPUs matched to STCML by bus-ID lookup" in info.reason
    assert f"data path stcml+sysfs+stc-smi ({stcml_library}): stcmlInit succeeded" in caplog.text


def test_a_library_without_plain_stcml_names_falls_back_to_sysfs_and_says_why(
        stcml_mangled: Path, fixture: Fixture, smi_output: Path, host: FakeHost,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    backend = make_backend(host, stcml_mangled)
    with opened(backend):
        devices = backend.devices()
        info = backend.library_info()
    assert [(d.id, d.uuid, d.healthy) for d in devices] == [(BUS0, None, True), (BUS1, None, True)]
    assert (info.library, info.api, info.path) == (str(stcml_mangled), "none", "sysfs+stc-smi")
    assert "exports no stcmlInit" in info.reason and "mangled" in caplog.text


def test_cli_devices_table_says_which_path_is_used(stcml_library: Path, fixture: Fixture, smi_output: Path,
                                                   host: FakeHost) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KRAKENPLUG_")}
    result = subprocess.run([sys.executable, "-m", "krakenplug", "devices", "--backend", "streamcomputing",
                             *backend_opt_flags({"library_path": stcml_library, **host.options,
                                                 "smi_path": FAKE_STC_SMI})],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(
        f"backend streamcomputing: library {stcml_library}, API stcml, path stcml+sysfs+stc-smi (stcmlInit succeeded")


def test_cli_devices_json_without_the_library(smi_output: Path, host: FakeHost) -> None:
    rows = devices_json("streamcomputing", library_path=host.dev.parent / "none" / "libstcml.so", **host.options,
                        smi_path=FAKE_STC_SMI)
    assert {(r["library"]["api"], r["library"]["path"]) for r in rows} == {("none", "sysfs+stc-smi")}
    assert "cannot load the StreamComputing STCML library" in rows[0]["library"]["reason"]
    assert [(r["id"], r["index"], r["model"], r["numa_node"], r["memory_total_mb"], r["resource"]) for r in rows] == [
        (BUS0, 0, "STCP920", 0, 16384, "streamcomputing.com/npu"),
        (BUS1, 1, "STCP920", 1, 16384, "streamcomputing.com/npu")]

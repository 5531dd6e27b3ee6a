"""The fake backend: devices from a watched file, run-time faults, the last good state on bad edits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from krakenplug import errors
from krakenplug.backends import base, fake

TWO_DEVICES = """\
devices:
  - id: dev-a
    model: Sim-40G
    memory_mb: 40960
    numa_node: 0
    utilization: 10
    memory_used_mb: 100
  - id: dev-b
    model: Sim-80G
    memory_mb: 81920
    numa_node: 1
    health: Unhealthy
    health_reason: ECC
"""


def _write(path: Path, text: str) -> None:
    # Replace atomically, as editors and kubectl-cp do, so the watcher never reads half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _backend(path: Path, **options: object) -> fake.FakeBackend:
    backend = fake.FakeBackend(fake.FakeOptions(devices_file=path, **options))
    backend.open()
    return backend


def test_embedded_default_describes_four_devices_on_two_numa_nodes() -> None:
    backend = fake.FakeBackend(fake.FakeOptions())
    backend.open()
    found = backend.devices()
    assert [d.id for d in found] == ["fake-0", "fake-1", "fake-2", "fake-3"]
    assert {d.numa_node for d in found} == {0, 1}
    assert all(d.resource == "krakenplug.pcl.ac.cn/fake" and d.healthy for d in found)


def test_devices_samples_and_allocation_follow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    _write(path, TWO_DEVICES)
    backend = _backend(path)
    first, second = backend.devices()
    assert (first.index, first.memory_total_mb, first.health) == (0, 40960, base.Health.HEALTHY)
    assert (second.health, second.health_reason) == (base.Health.UNHEALTHY, "ECC")
    assert backend.sample(first) == base.DeviceSample(
        utilization_percent=10.0, memory_used_mb=100.0, memory_total_mb=40960.0)
    allocation = backend.allocate([first, second])
    assert allocation.envs["KRAKENPLUG_VISIBLE_DEVICES"] == "dev-a,dev-b"
    assert [n.container_path for n in allocation.device_nodes] == ["/dev/krakenplug-fake0", "/dev/krakenplug-fake1"]


def test_per_model_resource_rules_pick_the_resource(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    _write(path, TWO_DEVICES)
    backend = _backend(path, resources=[{"name": "example.com/sim-80g", "models": ["sim-80*"]}])
    assert [d.resource for d in backend.devices()] == ["krakenplug.pcl.ac.cn/fake", "example.com/sim-80g"]


def test_edits_change_health_and_device_set_at_run_time(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    _write(path, TWO_DEVICES)
    backend = _backend(path)
    _write(path, TWO_DEVICES.replace("health: Unhealthy", "health: Healthy"))
    assert all(d.healthy for d in backend.devices())
    _write(path, TWO_DEVICES.split("  - id: dev-b")[0])
    assert [d.id for d in backend.devices()] == ["dev-a"]


def test_malformed_edit_keeps_the_last_good_state_and_reports_line_and_field(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "devices.yaml"
    _write(path, TWO_DEVICES)
    backend = _backend(path)
    _write(path, TWO_DEVICES.replace("memory_mb: 81920", "memory_mb: plenty"))
    assert [d.id for d in backend.devices()] == ["dev-a", "dev-b"]
    assert "line 10" in backend.last_error and "devices[1].memory_mb" in backend.last_error
    assert "'plenty'" in backend.last_error
    assert "keeping the last good device list" in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("devices: [{id: a, model: m, memory_mb: 1, health: Sick}]", "devices[0].health"),
        ("devices: [{id: a, model: m, memory_mb: -1}]", "devices[0].memory_mb"),
        ("devices: [{id: a, model: m, memory_mb: 1, utilization: 140}]", "devices[0].utilization"),
        ("devices: [{id: 'bad id', model: m, memory_mb: 1}]", "devices[0].id"),
        ("devices: [{id: a, model: m, memory_mb: 1, colour: red}]", "devices[0].colour"),
        ("devices: [{id: a, model: m, memory_mb: 1}, {id: a, model: m, memory_mb: 1}]", "duplicate device id 'a'"),
        ("- just a list", "expected a mapping"),
        ("devices: [unclosed", "invalid YAML"),
    ],
    ids=["bad-health", "negative-memory", "utilization-over-100", "invalid-id", "unknown-field", "duplicate-id",
         "not-a-mapping", "broken-yaml"],
)
def test_invalid_device_files_are_refused_with_the_field(text: str, expected: str) -> None:
    with pytest.raises(errors.ConfigError, match="devices.yaml") as raised:
        fake.parse_devices_file(text, source="devices.yaml")
    assert expected in str(raised.value)


def test_an_unreadable_file_at_open_makes_the_backend_unavailable(tmp_path: Path) -> None:
    backend = fake.FakeBackend(fake.FakeOptions(devices_file=tmp_path / "missing.yaml"))
    with pytest.raises(errors.BackendUnavailable, match="missing.yaml"):
        backend.open()


def test_faults_make_samples_fail_or_hang(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    _write(path, TWO_DEVICES + "faults:\n  sample_error: ECC storm\n")
    backend = _backend(path)
    with pytest.raises(errors.DeviceQueryError, match="ECC storm"):
        backend.sample(backend.devices()[0])
    _write(path, TWO_DEVICES + "faults:\n  sample_delay_seconds: 0.2\n")
    started = time.monotonic()
    backend.sample(backend.devices()[0])
    assert time.monotonic() - started >= 0.2


def test_watch_health_reports_each_change(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    _write(path, TWO_DEVICES)
    backend = _backend(path, watch_interval_seconds=0.01)
    stop, changed = threading.Event(), threading.Event()
    watcher = threading.Thread(target=backend.watch_health, args=(stop, changed.set))
    watcher.start()
    try:
        assert not changed.wait(0.2)  # nothing changed yet
        _write(path, TWO_DEVICES.replace("health: Unhealthy", "health: Healthy"))
        assert changed.wait(5)
    finally:
        stop.set()
        watcher.join(5)
    assert not watcher.is_alive()


def test_any_bytes_are_refused_with_the_byte_named_and_the_last_state_kept(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    _write(path, TWO_DEVICES)
    backend = _backend(path)
    path.write_bytes(b"devices:\n  - id: \xff\xfe\x00\x01")
    assert [d.id for d in backend.devices()] == ["dev-a", "dev-b"]
    assert "not UTF-8 text (byte 17: b'\\xff')" in backend.last_error


def test_a_file_over_the_size_limit_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    _write(path, TWO_DEVICES)
    backend = _backend(path, max_file_bytes=4096)
    _write(path, TWO_DEVICES + "# padding\n" * 1000)
    assert [d.id for d in backend.devices()] == ["dev-a", "dev-b"]
    assert "larger than 4096 bytes (backends.fake.max_file_bytes)" in backend.last_error
    with pytest.raises(errors.BackendUnavailable, match="max_file_bytes"):
        _backend(path, max_file_bytes=4096)


def test_the_watcher_reads_an_in_place_rewrite_only_once_it_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    _write(path, TWO_DEVICES)
    backend = _backend(path, settle_seconds=0.05)
    stop, changes = threading.Event(), []
    watcher = threading.Thread(target=backend.watch_health, args=(stop, lambda: changes.append(backend.devices())))
    watcher.start()
    try:
        time.sleep(0.2)
        first_device_only = TWO_DEVICES.index("  - id: dev-b")
        with open(path, "w") as file:  # valid YAML with one device for 0.3 s, then the same file as before
            file.write(TWO_DEVICES[:first_device_only])
            file.flush()
            time.sleep(0.3)
            file.write(TWO_DEVICES[first_device_only:])
        time.sleep(0.3)
        assert changes == [] and [d.id for d in backend.devices()] == ["dev-a", "dev-b"]
    finally:
        stop.set()
        watcher.join(5)
    assert not watcher.is_alive()


def test_a_configmap_update_is_seen_although_the_file_name_itself_never_changes(tmp_path: Path) -> None:
    # The kubelet's layout of a ConfigMap volume: devices.yaml -> ..data/devices.yaml, ..data -> ..<version>;
    # an update writes a new version directory and renames a new ..data link over the old one.
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "devices.yaml").write_text(TWO_DEVICES)
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "devices.yaml").symlink_to("..data/devices.yaml")
    backend = _backend(tmp_path / "devices.yaml")
    stop, changed = threading.Event(), threading.Event()
    watcher = threading.Thread(target=backend.watch_health, args=(stop, changed.set))
    watcher.start()
    try:
        time.sleep(0.2)
        (tmp_path / "..v2").mkdir()
        (tmp_path / "..v2" / "devices.yaml").write_text(TWO_DEVICES.replace("health: Unhealthy", "health: Healthy"))
        (tmp_path / "..data_tmp").symlink_to("..v2")
        (tmp_path / "..data_tmp").replace(tmp_path / "..data")
        assert changed.wait(5)
        assert all(d.healthy for d in backend.devices())
    finally:
        stop.set()
        watcher.join(5)

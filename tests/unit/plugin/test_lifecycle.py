"""The running plugin against a kubelet stub: registration, snapshots, restarts, shutdown."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import grpc
import pytest

from krakenplug import errors
from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.backends import fake

from .conftest import KubeletStub, fake_backend, fake_devices, write_devices

RESOURCE = fake.DEFAULT_RESOURCE
SOCKET = "krakenplug-fake.sock"


def _sockets(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)}


def test_plugin_serves_then_registers_and_kubelet_dials_back(kubelet, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    registered = kubelet.latest(RESOURCE)
    assert registered.request.version == "v1beta1"
    assert registered.request.endpoint == SOCKET
    assert registered.options.get_preferred_allocation_available is True
    assert registered.options.pre_start_required is False
    assert kubelet.devices(RESOURCE) == {
        "fake-0": ("Healthy", (0,)), "fake-1": ("Healthy", (0,)),
        "fake-2": ("Healthy", (1,)), "fake-3": ("Healthy", (1,)),
    }


def test_list_and_watch_sends_a_full_snapshot_on_every_health_change(kubelet, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    sick = fake_devices(4)
    sick[1].update(health="Unhealthy", health_reason="XID 79")
    write_devices(devices_file, sick)
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE)["fake-1"][0] == "Unhealthy")
    assert {i: h for i, (h, _) in kubelet.devices(RESOURCE).items()} == {
        "fake-0": "Healthy", "fake-1": "Unhealthy", "fake-2": "Healthy", "fake-3": "Healthy"}
    write_devices(devices_file, fake_devices(4))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE)["fake-1"][0] == "Healthy")


def test_list_and_watch_follows_devices_added_and_removed(kubelet, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    write_devices(devices_file, fake_devices(6))
    kubelet.wait_for(lambda: len(kubelet.devices(RESOURCE)) == 6)
    write_devices(devices_file, fake_devices(2))
    kubelet.wait_for(lambda: set(kubelet.devices(RESOURCE)) == {"fake-0", "fake-1"})


def test_devices_without_numa_node_carry_no_topology(kubelet, devices_file, start_plugin):
    write_devices(devices_file, fake_devices(2, numa=lambda i: None))
    start_plugin(fake_backend(devices_file))
    snapshot = kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    assert snapshot == {"fake-0": ("Healthy", ()), "fake-1": ("Healthy", ())}


def test_changes_are_found_by_the_periodic_rescan_without_health_events(kubelet, devices_file, start_plugin):
    backend = _NoEvents(fake_backend(devices_file))
    start_plugin(backend, rescan_interval_seconds=0.1)
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    write_devices(devices_file, fake_devices(4, health="Unhealthy"))
    kubelet.wait_for(lambda: all(h == "Unhealthy" for h, _ in kubelet.devices(RESOURCE).values()))


def test_a_failing_device_read_keeps_the_last_snapshot(kubelet, devices_file, start_plugin):
    backend = _NoEvents(fake_backend(devices_file))
    start_plugin(backend, rescan_interval_seconds=0.05)
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    backend.failing = True
    failures = backend.calls + 3
    kubelet.wait_for(lambda: backend.calls >= failures)
    assert len(kubelet.devices(RESOURCE)) == 4
    assert SOCKET in _sockets(kubelet.directory)
    backend.failing = False
    write_devices(devices_file, fake_devices(3))
    kubelet.wait_for(lambda: len(kubelet.devices(RESOURCE)) == 3)


def test_replicas_advertise_one_id_per_share_with_the_device_health(kubelet, devices_file, start_plugin):
    unhealthy = fake_devices(2)
    unhealthy[1]["health"] = "Unhealthy"
    write_devices(devices_file, unhealthy)
    start_plugin(fake_backend(devices_file), replicas=3)
    snapshot = kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    assert snapshot == {
        "fake-0::0": ("Healthy", (0,)), "fake-0::1": ("Healthy", (0,)), "fake-0::2": ("Healthy", (0,)),
        "fake-1::0": ("Unhealthy", (0,)), "fake-1::1": ("Unhealthy", (0,)), "fake-1::2": ("Unhealthy", (0,)),
    }


def test_no_devices_means_no_server_and_no_registration_until_one_appears(kubelet, devices_file, start_plugin):
    write_devices(devices_file, [])
    run = start_plugin(fake_backend(devices_file))
    time.sleep(0.5)  # give a wrong implementation time to register or bind
    assert kubelet.registrations == []
    assert _sockets(kubelet.directory) == {"kubelet.sock"}
    assert run.thread.is_alive()
    write_devices(devices_file, fake_devices(1))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE) == {"fake-0": ("Healthy", (0,))})


def test_one_server_per_resource_and_a_vanished_resource_is_stopped(kubelet, devices_file, start_plugin):
    rules = [{"name": "example.com/big", "models": ["*-80G"]}, {"name": "example.com/small", "models": ["*-8G"]}]
    mixed = fake_devices(2) + [{"id": "small-0", "model": "KrakenSim-8G", "memory_mb": 8192}]
    write_devices(devices_file, mixed)
    start_plugin(fake_backend(devices_file, resources=rules))
    kubelet.wait_for(lambda: kubelet.devices("example.com/big") and kubelet.devices("example.com/small"))
    assert kubelet.latest("example.com/small").request.endpoint == "krakenplug-small.sock"
    assert set(kubelet.devices("example.com/small")) == {"small-0"}
    write_devices(devices_file, fake_devices(2))
    kubelet.wait_for(lambda: kubelet.latest("example.com/small").ended
                     and "krakenplug-small.sock" not in _sockets(kubelet.directory))
    assert set(kubelet.devices("example.com/big")) == {"fake-0", "fake-1"}


def test_registration_waits_for_the_kubelet_socket(short_tmp, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file))
    time.sleep(0.3)
    late = KubeletStub(short_tmp)
    late.start()
    try:
        late.wait_for(lambda: late.devices(RESOURCE))
    finally:
        late.stop()


def test_refused_registration_is_retried(kubelet, devices_file, start_plugin, caplog):
    kubelet.refuse_with = "resource name is invalid"
    start_plugin(fake_backend(devices_file))
    kubelet.wait_for(lambda: "refused the registration" in caplog.text)
    assert "resource name is invalid" in caplog.text
    kubelet.refuse_with = None
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))


def test_deleted_socket_makes_the_plugin_serve_again_and_reregister(kubelet, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    (kubelet.directory / SOCKET).unlink()
    kubelet.wait_for(lambda: len(kubelet.registrations) == 2 and kubelet.devices(RESOURCE))
    assert SOCKET in _sockets(kubelet.directory)
    assert set(kubelet.devices(RESOURCE)) == {"fake-0", "fake-1", "fake-2", "fake-3"}


def test_kubelet_restart_leads_to_a_fresh_registration_with_the_same_ids(kubelet, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file))
    before = kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    kubelet.restart()
    kubelet.wait_for(lambda: len(kubelet.registrations) >= 2 and kubelet.devices(RESOURCE))
    assert kubelet.devices(RESOURCE) == before
    response = kubelet.plugin(RESOURCE).Allocate(
        dp_pb2.AllocateRequest(container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=["fake-2"])]))
    assert response.container_responses[0].envs["KRAKENPLUG_VISIBLE_DEVICES"] == "fake-2"


def test_recreated_kubelet_socket_alone_triggers_reregistration(kubelet, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    kubelet.stop()  # unlike restart(), our socket stays: only kubelet.sock changes
    kubelet.start()
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE) and len(kubelet.registrations) >= 2)


def test_too_many_restarts_raise_out_of_run(kubelet, devices_file, start_plugin):
    run = start_plugin(fake_backend(devices_file), restart_limit=2, restart_window_seconds=600)
    for expected in (1, 2, 3):
        kubelet.wait_for(lambda n=expected: len(kubelet.registrations) == n and kubelet.devices(RESOURCE))
        (kubelet.directory / SOCKET).unlink()
    run.thread.join(timeout=15)
    assert not run.thread.is_alive()
    assert len(run.error) == 1 and isinstance(run.error[0], errors.RegistrationError)
    assert "restart_limit=2" in str(run.error[0])
    assert SOCKET not in _sockets(kubelet.directory)


def test_stop_removes_every_socket_and_ends_the_streams(kubelet, devices_file, start_plugin):
    run = start_plugin(fake_backend(devices_file))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    threads_before = threading.active_count()
    run.finish()
    assert run.error == []
    assert _sockets(kubelet.directory) == {"kubelet.sock"}
    kubelet.wait_for(lambda: kubelet.latest(RESOURCE).ended)
    assert threading.active_count() < threads_before


def test_stale_socket_file_is_replaced(kubelet, devices_file, start_plugin):
    (kubelet.directory / SOCKET).write_text("left over by a killed plugin")
    start_plugin(fake_backend(devices_file))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    assert SOCKET in _sockets(kubelet.directory)


def test_two_list_and_watch_streams_get_the_same_updates(kubelet, devices_file, start_plugin):
    start_plugin(fake_backend(devices_file))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    second = kubelet.plugin(RESOURCE).ListAndWatch(dp_pb2.Empty())
    try:
        assert len(next(second).devices) == 4
        write_devices(devices_file, fake_devices(5))
        assert len(next(second).devices) == 5
        kubelet.wait_for(lambda: len(kubelet.devices(RESOURCE)) == 5)
    finally:
        second.cancel()


def test_the_backend_allocation_limit_is_enforced_by_the_running_plugin(kubelet, devices_file, start_plugin):
    start_plugin(_OnePerContainer(fake_backend(devices_file)))
    kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    plugin = kubelet.plugin(RESOURCE)
    request = dp_pb2.AllocateRequest(container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=["fake-0"])])
    assert len(plugin.Allocate(request).container_responses) == 1
    request.container_requests[0].devices_ids.append("fake-1")
    with pytest.raises(grpc.RpcError) as raised:
        plugin.Allocate(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1" in raised.value.details()


class _OnePerContainer:
    """The fake backend plus the SupportsAllocationLimit capability (like StreamComputing's one NPU)."""

    name = "one-per-container"

    def __init__(self, inner: fake.FakeBackend) -> None:
        self._inner = inner

    def devices(self):
        return self._inner.devices()

    def allocate(self, devices):
        return self._inner.allocate(devices)

    def max_devices_per_container(self) -> int | None:
        return 1


class _NoEvents:
    """A backend without health events (only the periodic rescan sees changes) whose reads can fail."""

    name = "no-events"

    def __init__(self, inner: fake.FakeBackend) -> None:
        self._inner = inner
        self.failing = False
        self.calls = 0

    def devices(self):
        self.calls += 1
        if self.failing:
            raise errors.DeviceQueryError("driver went away")
        return self._inner.devices()

    def allocate(self, devices):
        return self._inner.allocate(devices)



def test_a_missing_plugin_directory_is_reported_once_and_served_once_it_exists(short_tmp, devices_file, start_plugin,
                                                                              caplog, capfd):
    directory = short_tmp / "dp"
    run = start_plugin(fake_backend(devices_file), device_plugin_dir=directory)
    deadline = time.monotonic() + 15
    while "does not exist" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.5)  # more than two fallback polls of the missing directory
    missing = [r.getMessage() for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(missing) == 1 and "--device-plugin-dir" in missing[0] and str(directory) in missing[0]
    assert run.thread.is_alive()
    directory.mkdir()
    kubelet = KubeletStub(directory)
    kubelet.start()
    try:
        kubelet.wait_for(lambda: kubelet.devices(RESOURCE))
    finally:
        run.finish()
        kubelet.stop()
    assert "add_port" not in capfd.readouterr().err  # gRPC's own bind error never reaches the log

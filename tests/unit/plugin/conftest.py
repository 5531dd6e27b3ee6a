"""Fixtures for the device-plugin tests: a small kubelet stub, fake device files and a running plugin.

``KubeletStub`` does what the real kubelet does on registration (since 1.25): it dials the plugin's
socket back during Register, calls GetDevicePluginOptions, then keeps a ListAndWatch stream open and
records every snapshot. ``restart()`` behaves like a kubelet restart: every socket in the directory is
deleted and kubelet.sock is created anew.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from krakenplug import settings as settings_mod
from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.backends import fake
from krakenplug.hub import DeviceHub

WAIT_SECONDS = 15.0


@dataclasses.dataclass
class Registered:
    request: dp_pb2.RegisterRequest
    options: dp_pb2.DevicePluginOptions
    channel: grpc.Channel
    snapshots: list[dict[str, tuple[str, tuple[int, ...]]]] = dataclasses.field(default_factory=list)
    stream: Any = None
    ended: bool = False


class KubeletStub(dp_grpc.RegistrationServicer):
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.socket = self.directory / "kubelet.sock"
        self.registrations: list[Registered] = []
        self.refuse_with: str | None = None  # set to make Register fail with this message
        self._changed = threading.Condition()
        self._server: grpc.Server | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        dp_grpc.add_RegistrationServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{self.socket}")
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(None).wait()
            self._server = None
        for registered in self.registrations:
            if registered.stream is not None:
                registered.stream.cancel()
            registered.channel.close()
        for thread in self._threads:
            thread.join(timeout=WAIT_SECONDS)
        self._threads.clear()
        if self.socket.exists():
            self.socket.unlink()

    def restart(self) -> None:
        """Like a kubelet restart: stop, delete every socket in the directory, serve a new kubelet.sock."""
        self.stop()
        for path in self.directory.iterdir():
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        self.start()

    # -- the Registration service ----------------------------------------------------------------

    def Register(self, request: dp_pb2.RegisterRequest, context: grpc.ServicerContext) -> dp_pb2.Empty:
        if self.refuse_with:
            context.abort(grpc.StatusCode.UNKNOWN, self.refuse_with)
        channel = grpc.insecure_channel(f"unix://{self.directory / request.endpoint}")
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
            options = dp_grpc.DevicePluginStub(channel).GetDevicePluginOptions(dp_pb2.Empty(), timeout=10)
        except (grpc.FutureTimeoutError, grpc.RpcError) as err:
            channel.close()
            context.abort(grpc.StatusCode.UNKNOWN, f"failed to get device plugin options: {err}")
        registered = Registered(request, options, channel)
        with self._changed:
            self.registrations.append(registered)
            self._changed.notify_all()
        thread = threading.Thread(target=self._watch, args=(registered,), daemon=True)
        self._threads.append(thread)
        thread.start()
        return dp_pb2.Empty()

    def _watch(self, registered: Registered) -> None:
        registered.stream = dp_grpc.DevicePluginStub(registered.channel).ListAndWatch(dp_pb2.Empty())
        try:
            for response in registered.stream:
                devices = {d.ID: (d.health, tuple(n.ID for n in d.topology.nodes)) for d in response.devices}
                with self._changed:
                    registered.snapshots.append(devices)
                    self._changed.notify_all()
        except grpc.RpcError:
            pass
        with self._changed:
            registered.ended = True
            self._changed.notify_all()

    # -- what tests look at ----------------------------------------------------------------------

    def latest(self, resource: str) -> Registered | None:
        with self._changed:
            matching = [r for r in self.registrations if r.request.resource_name == resource]
            return matching[-1] if matching else None

    def devices(self, resource: str) -> dict[str, tuple[str, tuple[int, ...]]] | None:
        registered = self.latest(resource)
        if registered is None or not registered.snapshots or registered.ended:
            return None
        return registered.snapshots[-1]

    def wait_for(self, predicate: Callable[[], Any], *, timeout: float = WAIT_SECONDS) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"condition not met within {timeout} s; registrations: "
                                         f"{[(r.request.resource_name, r.snapshots[-1:]) for r in self.registrations]}")
                self._changed.wait(min(remaining, 0.05))

    def plugin(self, resource: str) -> dp_grpc.DevicePluginStub:
        registered = self.latest(resource)
        assert registered is not None, f"{resource} never registered"
        return dp_grpc.DevicePluginStub(registered.channel)


def write_devices(path: Path, devices: list[dict[str, Any]]) -> None:
    """Writes a fake-backend device file atomically, so the backend never reads half of it."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump({"devices": devices}))
    temporary.replace(path)


def fake_devices(count: int, *, numa: Callable[[int], int | None] = lambda i: i // 2, **overrides: Any) -> list[dict]:
    return [{"id": f"fake-{i}", "model": "KrakenSim-80G", "memory_mb": 81920, "numa_node": numa(i), **overrides}
            for i in range(count)]


@dataclasses.dataclass
class PluginRun:
    stop: threading.Event
    thread: threading.Thread
    backend: Any
    error: list[BaseException]

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=WAIT_SECONDS)
        assert not self.thread.is_alive(), "plugin.run did not return after stop was set"


@pytest.fixture
def kubelet(short_tmp: Path) -> Iterator[KubeletStub]:
    stub = KubeletStub(short_tmp)
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture
def devices_file(short_tmp: Path) -> Path:
    path = short_tmp / "devices.yaml"
    write_devices(path, fake_devices(4))
    return path


def make_settings(directory: Path, **plugin: Any) -> settings_mod.Settings:
    options = {"device_plugin_dir": directory, "rescan_interval_seconds": 30.0, **plugin}
    return settings_mod.Settings(node_name="test-node", plugin=settings_mod.PluginSettings(**options))


def fake_backend(devices_file: Path, **options: Any) -> fake.FakeBackend:
    backend = fake.FakeBackend(fake.FakeOptions(devices_file=devices_file, watch_interval_seconds=0.02, **options))
    backend.open()
    return backend


@pytest.fixture
def start_plugin(short_tmp: Path, clean_env: None) -> Iterator[Callable[..., PluginRun]]:
    """Starts ``krakenplug.plugin.run`` on a thread; every run is stopped and joined at teardown."""
    from krakenplug import plugin

    runs: list[PluginRun] = []

    def _start(backend: Any, **plugin_settings: Any) -> PluginRun:
        config = make_settings(short_tmp, **plugin_settings)
        stop, error = threading.Event(), []

        def _target() -> None:
            hub = DeviceHub(backend, poll_seconds=config.plugin.rescan_interval_seconds)
            hub.start(stop)
            try:
                plugin.run(config, hub, stop)
            except BaseException as err:  # noqa: BLE001 - handed to the test, which asserts on it
                error.append(err)
            finally:
                hub.stop_waiters(stop)
                hub.join()

        thread = threading.Thread(target=_target, name="plugin-under-test", daemon=True)
        run = PluginRun(stop, thread, backend, error)
        runs.append(run)
        thread.start()
        return run

    yield _start
    for run in runs:
        run.finish()

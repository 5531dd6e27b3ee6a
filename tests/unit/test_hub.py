"""The device hub: the one reader of backend.devices(), publishing versioned snapshots on change."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from krakenplug.backends import base
from krakenplug.hub import DeviceHub, Snapshot
from krakenplug.transitions import TransitionLog


def _device(device_id: str, health: base.Health = base.Health.HEALTHY) -> base.Device:
    return base.Device(id=device_id, index=0, vendor="test", model="M", memory_total_mb=1, resource="r/x",
                       health=health)


class _ScriptedBackend:
    """Answers devices() from a list the test changes; counts the calls."""

    name = "scripted"

    def __init__(self, devices: Sequence[base.Device]) -> None:
        self.current: list[base.Device] = list(devices)
        self.failure: Exception | None = None
        self.calls = 0

    def open(self) -> None: ...

    def close(self) -> None: ...

    def devices(self) -> Sequence[base.Device]:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return list(self.current)

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        return base.ContainerAllocation()

    def sample(self, device: base.Device) -> base.DeviceSample:
        return base.DeviceSample()


class _EventBackend(_ScriptedBackend):
    """Says "changed" when the test asks it to, like a backend with XID events or a file watch."""

    def __init__(self, devices: Sequence[base.Device]) -> None:
        super().__init__(devices)
        self.fire = threading.Event()

    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        while not stop.is_set():
            if self.fire.wait(0.01):
                self.fire.clear()
                changed()


def test_publishes_a_new_version_only_when_devices_differ() -> None:
    backend = _ScriptedBackend([_device("a"), _device("b")])
    hub = DeviceHub(backend)
    seen: list[Snapshot] = []
    hub.subscribe(seen.append)
    first = hub.refresh()
    assert (first.version, [d.id for d in first.devices]) == (1, ["a", "b"])
    assert hub.refresh() is first  # nothing changed: same snapshot, no notification
    backend.current[1] = _device("b", base.Health.UNHEALTHY)
    second = hub.refresh()
    assert second.version == 2 and not second.by_id["b"].healthy
    assert [s.version for s in seen] == [1, 2]
    assert [d.id for d in second.healthy()] == ["a"]


def test_an_empty_first_read_is_published_too() -> None:
    hub = DeviceHub(_ScriptedBackend([]))
    assert hub.refresh().version == 1


def test_a_failing_read_keeps_the_last_devices_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    backend = _ScriptedBackend([_device("a")])
    hub = DeviceHub(backend)
    hub.refresh()
    backend.failure = RuntimeError("driver gone")
    with caplog.at_level(logging.WARNING, logger="krakenplug.hub"):
        failed = hub.refresh()
        again = hub.refresh()
    assert [d.id for d in failed.devices] == ["a"] and failed.error == "driver gone"
    assert again is failed
    assert sum("driver gone" in r.getMessage() for r in caplog.records) == 1
    backend.failure = None
    assert hub.refresh().error == ""


def test_backend_events_wake_the_hub_without_waiting_for_the_poll() -> None:
    backend = _EventBackend([_device("a")])
    hub = DeviceHub(backend, poll_seconds=3600)
    stop = threading.Event()
    first = hub.start(stop)
    try:
        backend.current = [_device("a", base.Health.UNHEALTHY)]
        backend.fire.set()
        changed = hub.wait_for_change(first.version, timeout=5)
        assert changed.version == first.version + 1 and not changed.devices[0].healthy
    finally:
        hub.stop_waiters(stop)
        hub.join()


def test_the_poll_catches_changes_of_a_backend_without_events() -> None:
    backend = _ScriptedBackend([_device("a")])
    hub = DeviceHub(backend, poll_seconds=0.02)
    stop = threading.Event()
    first = hub.start(stop)
    try:
        backend.current = []
        assert hub.wait_for_change(first.version, timeout=5).devices == ()
    finally:
        hub.stop_waiters(stop)
        hub.join()


def test_a_broken_subscriber_does_not_starve_the_others() -> None:
    hub = DeviceHub(_ScriptedBackend([_device("a")]))
    seen: list[int] = []

    def broken(_: Snapshot) -> None:
        raise ValueError("boom")

    hub.subscribe(broken)
    unsubscribe = hub.subscribe(lambda s: seen.append(s.version))
    hub.refresh()
    unsubscribe()
    hub.backend.current = []  # type: ignore[attr-defined]
    hub.refresh()
    assert seen == [1]


def test_snapshots_are_immutable() -> None:
    snapshot = DeviceHub(_ScriptedBackend([_device("a")])).refresh()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.version = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        snapshot.by_id["b"] = _device("b")  # type: ignore[index]


def test_transition_log_reports_starts_changes_and_recoveries_once(caplog: pytest.LogCaptureFixture) -> None:
    log = TransitionLog(logging.getLogger("t"))
    with caplog.at_level(logging.INFO, logger="t"):
        assert log.report("k", "e1", logging.WARNING, "failed: %s", "e1")
        assert not log.report("k", "e1", logging.WARNING, "failed: %s", "e1")
        assert log.report("k", "e2", logging.WARNING, "failed: %s", "e2")
        assert log.active("k") == "e2"
        assert log.clear("k", logging.INFO, "recovered")
        assert not log.clear("k", logging.INFO, "recovered")
    assert [r.getMessage() for r in caplog.records] == ["failed: e1", "failed: e2", "recovered"]


def test_an_event_is_read_on_the_event_thread_one_read_at_a_time() -> None:
    class _Overlaps(_EventBackend):
        def __init__(self, devices: Sequence[base.Device]) -> None:
            super().__init__(devices)
            self.inside = 0
            self.most_inside = 0
            self.guard = threading.Lock()

        def devices(self) -> Sequence[base.Device]:
            with self.guard:
                self.inside += 1
                self.most_inside = max(self.most_inside, self.inside)
            try:
                threading.Event().wait(0.002)  # long enough for the poll thread and the event thread to meet
                return super().devices()
            finally:
                with self.guard:
                    self.inside -= 1

    backend = _Overlaps([_device("a")])
    hub = DeviceHub(backend, poll_seconds=0.001)  # the poll thread reads all the time
    readers: list[str] = []
    hub.subscribe(lambda snapshot: readers.append(threading.current_thread().name))
    stop = threading.Event()
    hub.start(stop)
    try:
        for flip in range(20):
            backend.current = [_device("a", base.Health.UNHEALTHY if flip % 2 == 0 else base.Health.HEALTHY)]
            before = hub.snapshot().version
            backend.fire.set()
            assert hub.wait_for_change(before, timeout=5).version > before
        assert backend.most_inside == 1
        assert "device-hub-events" in readers  # no hop to the poll thread when it is free
    finally:
        hub.stop_waiters(stop)
        hub.join()


def test_a_change_reported_during_a_read_is_read_after_it() -> None:
    class _Slow(_ScriptedBackend):
        def __init__(self, devices: Sequence[base.Device]) -> None:
            super().__init__(devices)
            self.entered, self.release = threading.Event(), threading.Event()
            self.block = False

        def devices(self) -> Sequence[base.Device]:
            taken = super().devices()
            if self.block:
                self.entered.set()
                self.release.wait(5)
            return taken

    backend = _Slow([_device("a")])
    hub = DeviceHub(backend, poll_seconds=3600)
    stop = threading.Event()
    first = hub.start(stop)
    try:
        backend.block = True
        reader = threading.Thread(target=hub.refresh)
        reader.start()
        assert backend.entered.wait(5)
        backend.block = False
        backend.current = [_device("b")]  # after the blocked read took its (unchanged) list
        started = time.monotonic()
        hub.changed()  # the read in flight holds the lock: the poll thread is to read again after it
        assert time.monotonic() - started < 1.0
        backend.release.set()
        reader.join(5)
        assert hub.wait_for_change(first.version, timeout=5).devices == (_device("b"),)
    finally:
        hub.stop_waiters(stop)
        hub.join()

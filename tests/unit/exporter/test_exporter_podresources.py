"""The PodResources watcher against a real gRPC PodResourcesLister on a unix socket."""

from __future__ import annotations

import time

import grpc
import pytest
from exporter_helpers import RESOURCE, FakeKubelet, container, pod, response

from krakenplug.exporter.attribution import Allocation
from krakenplug.exporter.podresources import IDLE_AFTER_SECONDS, MAX_BACKOFF_SECONDS, PodResourcesWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def watcher_for():
    made: list[PodResourcesWatcher] = []

    def make(socket_path, **kwargs) -> PodResourcesWatcher:
        kwargs.setdefault("refresh_seconds", 5.0)
        made.append(PodResourcesWatcher(socket_path, **kwargs))
        return made[-1]

    yield make
    for watcher in made:
        watcher.close()


def test_list_answer_becomes_deduplicated_allocations(fake_kubelet, watcher_for):
    fake_kubelet.answer = response(pod("p", "ns", container("c", (RESOURCE, ["fake-0"], [0]),
                                                          (RESOURCE, ["fake-0"], [1]))))
    watcher = watcher_for(fake_kubelet.socket_path, wall_clock=lambda: 1234.5)
    assert watcher.refresh_once() == 5.0
    current = watcher.current()
    assert current.up and current.error == "" and current.last_success_unix == 1234.5
    assert current.allocations == (Allocation("ns", "p", "c", RESOURCE, "fake-0"),)


def test_a_missing_socket_means_no_pods_and_up_0(short_tmp, watcher_for):
    watcher = watcher_for(short_tmp / "absent.sock")
    assert watcher.refresh_once() == 5.0
    current = watcher.current()
    assert not current.up and current.allocations == () and current.last_success_unix == 0.0
    assert "absent.sock does not exist" in current.error


def test_rate_limiting_backs_off_exponentially_and_recovers(fake_kubelet, watcher_for):
    fake_kubelet.error = (grpc.StatusCode.RESOURCE_EXHAUSTED, "rejected by rate limit")
    watcher = watcher_for(fake_kubelet.socket_path, refresh_seconds=2.0)
    delays = [watcher.refresh_once() for _ in range(8)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS]
    assert "rate-limited by the kubelet: rejected by rate limit" in watcher.current().error
    fake_kubelet.error = None
    assert watcher.refresh_once() == 2.0 and watcher.current().up
    fake_kubelet.error = (grpc.StatusCode.RESOURCE_EXHAUSTED, "rejected by rate limit")
    assert watcher.refresh_once() == 2.0  # the backoff starts over after a success


def test_never_faster_than_twice_a_second(short_tmp):
    assert PodResourcesWatcher(short_tmp / "x.sock", refresh_seconds=0.001).refresh_seconds == 0.5


def test_other_errors_retry_at_the_normal_period(fake_kubelet, watcher_for):
    fake_kubelet.error = (grpc.StatusCode.INTERNAL, "boom")
    watcher = watcher_for(fake_kubelet.socket_path)
    assert watcher.refresh_once() == 5.0
    assert "INTERNAL: boom" in watcher.current().error


def test_a_slow_kubelet_hits_the_deadline(fake_kubelet, watcher_for):
    fake_kubelet.delay_seconds = 1.0
    watcher = watcher_for(fake_kubelet.socket_path, call_timeout_seconds=0.1)
    assert watcher.refresh_once() == 5.0
    current = watcher.current()
    assert not current.up and "DEADLINE_EXCEEDED" in current.error and current.allocations == ()


def test_the_last_map_is_kept_briefly_after_a_failure(fake_kubelet, watcher_for):
    fake_kubelet.answer = response(pod("p", "ns", container("c", (RESOURCE, ["fake-0"], []))))
    clock = Clock()
    watcher = watcher_for(fake_kubelet.socket_path, keep_seconds=30.0, clock=clock)
    watcher.refresh_once()
    fake_kubelet.error = (grpc.StatusCode.UNAVAILABLE, "kubelet restarting")
    clock.now += 10
    watcher.refresh_once()
    current = watcher.current()
    assert not current.up and len(current.allocations) == 1
    clock.now += 25
    assert watcher.current().allocations == ()


def test_a_restarted_kubelet_is_reached_again(short_tmp, watcher_for):
    first = FakeKubelet(short_tmp / "pr.sock")
    first.start()
    watcher = watcher_for(first.socket_path)
    watcher.refresh_once()
    assert watcher.current().up
    first.stop()
    watcher.refresh_once()
    assert not watcher.current().up

    second = FakeKubelet(short_tmp / "pr.sock")  # a new socket file, as after a kubelet restart
    second.answer = response(pod("p", "ns", container("c", (RESOURCE, ["fake-1"], []))))
    second.start()
    try:
        deadline = time.monotonic() + 15
        while not watcher.current().up and time.monotonic() < deadline:
            watcher.refresh_once()
            time.sleep(0.1)
        assert watcher.current().up, watcher.current().error
        assert [a.device_id for a in watcher.current().allocations] == ["fake-1"]
    finally:
        second.stop()


def test_the_background_thread_refreshes_and_stops(fake_kubelet, watcher_for):
    fake_kubelet.answer = response(pod("p", "ns", container("c", (RESOURCE, ["fake-0"], []))))
    watcher = watcher_for(fake_kubelet.socket_path, refresh_seconds=0.5)
    watcher.start()
    deadline = time.monotonic() + 10
    while fake_kubelet.calls < 2 and time.monotonic() < deadline:
        watcher.current()  # scraped, so the normal period applies (unscraped, it would be the idle one)
        time.sleep(0.05)
    assert fake_kubelet.calls >= 2 and watcher.current().up
    watcher.close()
    calls = fake_kubelet.calls
    time.sleep(0.6)
    assert fake_kubelet.calls == calls


def test_nobody_scraping_slows_the_refresh_and_a_scrape_wakes_it(fake_kubelet, watcher_for):
    clock = Clock()
    watcher = watcher_for(fake_kubelet.socket_path, refresh_seconds=5.0, keep_seconds=30.0, clock=clock)
    assert watcher.next_delay(watcher.refresh_once()) == 15.0  # never scraped yet: the idle period
    assert watcher.current().up  # the first scrape ends it
    assert watcher.next_delay(watcher.refresh_once()) == 5.0  # scraped lately: the normal period
    clock.now += IDLE_AFTER_SECONDS
    assert watcher.next_delay(watcher.refresh_once()) == 15.0  # idle: half the keep window, never stale
    assert watcher.current().up  # a scrape reads the map, still within keep_seconds, and ends the idle period
    assert watcher.next_delay(watcher.refresh_once()) == 5.0  # scraped lately: the normal period again
    clock.now += IDLE_AFTER_SECONDS
    fake_kubelet.error = (grpc.StatusCode.RESOURCE_EXHAUSTED, "rejected by rate limit")
    for _ in range(5):
        watcher.refresh_once()
    assert watcher.next_delay(watcher.refresh_once()) == MAX_BACKOFF_SECONDS  # a longer backoff is kept


def test_the_background_thread_refreshes_at_once_when_a_scrape_ends_the_idle_period(fake_kubelet, watcher_for):
    clock = Clock()
    watcher = watcher_for(fake_kubelet.socket_path, refresh_seconds=5.0, clock=clock)
    # nobody has scraped since start
    watcher.start()
    deadline = time.monotonic() + 10
    while fake_kubelet.calls < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert fake_kubelet.calls == 1  # waiting the idle period now
    watcher.current()
    while fake_kubelet.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_kubelet.calls == 2

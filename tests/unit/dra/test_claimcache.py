"""The ResourceClaim watch cache: only claims allocated here, UID checked, Prepare without a round trip."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

from krakenplug.backends.fake import FakeBackend, FakeOptions
from krakenplug.cluster import config as cluster_config
from krakenplug.dra import kube, slices
from krakenplug.dra.checkpoint import Checkpoint
from krakenplug.dra.claimcache import ClaimCache
from krakenplug.dra.prepare import ClaimRef, Preparer
from krakenplug.testing.dra_api import ResourceApiServer

from .conftest import DRIVER, NODE, Node


def _until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


@pytest.fixture
def cached(clean_env: None, tmp_path: Path) -> Iterator[tuple[ResourceApiServer, kube.ResourceApi, ClaimCache]]:
    with ResourceApiServer() as api:
        kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
        resource = kube.ResourceApi(lambda: cluster_config.connect(kubeconfig), timeout_seconds=5)
        cache = ClaimCache(resource, driver=DRIVER, pool=NODE)
        stop = threading.Event()
        thread = threading.Thread(target=cache.run, args=(stop,), kwargs={"retry_initial": 0.05, "retry_max": 0.2})
        api.put_claim({"metadata": {"namespace": "ns", "name": "before", "uid": "u-before"}, "status": {
            "allocation": {"devices": {"results": [{"driver": DRIVER, "pool": NODE, "device": "fake-0"}]}}}})
        thread.start()
        try:
            yield api, resource, cache
        finally:
            stop.set()
            thread.join(timeout=5)
            assert not thread.is_alive(), "the claim watch did not end at stop"


def _allocated(api: ResourceApiServer, name: str, uid: str) -> None:
    """A claim the scheduler allocated a device of ours on this node, reserved for a pod."""
    api.put_claim({"metadata": {"namespace": "ns", "name": name, "uid": uid}, "status": {
        **_results(DRIVER, NODE), "reservedFor": [{"resource": "pods", "name": "p", "uid": "p-1"}]}})


def _results(driver: str, pool: str) -> dict[str, object]:
    return {"allocation": {"devices": {"results": [{"request": "r", "driver": driver, "pool": pool,
                                                    "device": "fake-1"}]},
                           "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                               {"key": "metadata.name", "operator": "In", "values": [pool]}]}]}}}


def test_the_cache_holds_the_claims_allocated_here_and_follows_changes(cached) -> None:
    api, _, cache = cached
    _until(lambda: cache.get("ns", "before", "u-before"))  # from the initial list
    _allocated(api, "ours", "u-ours")
    api.put_claim({"metadata": {"namespace": "ns", "name": "elsewhere", "uid": "u-2"},
                   "status": _results(DRIVER, "other-node")})
    api.put_claim({"metadata": {"namespace": "ns", "name": "theirs", "uid": "u-3"},
                   "status": _results("other.example.com", NODE)})
    api.put_claim({"metadata": {"namespace": "ns", "name": "pending", "uid": "u-4"}})
    _until(lambda: cache.get("ns", "ours", "u-ours"))
    time.sleep(0.1)  # the other events arrived too
    assert len(cache) == 2
    assert cache.get("ns", "ours", "another-uid") is None  # a claim recreated under the same name: GET it
    api.delete_claim("ns", "ours")
    _until(lambda: cache.get("ns", "ours", "u-ours") is None)
    api.put_claim({"metadata": {"namespace": "ns", "name": "before", "uid": "u-before"}})  # deallocated
    _until(lambda: len(cache) == 0)


def test_prepare_reads_a_cached_claim_without_a_round_trip_and_gets_a_missed_one(cached, tmp_path: Path) -> None:
    api, resource, cache = cached
    backend = FakeBackend(FakeOptions())
    backend.open()
    devices = list(backend.devices())
    preparer = Preparer(api=resource, backend=backend, devices=lambda: slices.members(devices), driver=DRIVER,
                        node=NODE, cdi_dir=tmp_path / "cdi", checkpoint=Checkpoint(tmp_path / "checkpoint.json"),
                        cached=cache.get)
    _allocated(api, "hit", "u-hit")
    _until(lambda: cache.get("ns", "hit", "u-hit"))

    def gets(name: str) -> int:
        return sum(1 for r in api.requests if r.method == "GET" and r.path.endswith(f"/resourceclaims/{name}"))

    assert preparer.prepare(ClaimRef("ns", "u-hit", "hit")).devices
    assert gets("hit") == 0
    _allocated(api, "miss", "u-miss")
    assert preparer.prepare(ClaimRef("ns", "u-miss", "miss")).devices  # however far the watch is, it works
    with pytest.raises(Exception, match="UID mismatch"):
        preparer.prepare(ClaimRef("ns", "u-stale", "miss"))  # not the cached UID: read from the server, refused
    assert gets("miss") >= 1


def test_the_driver_prepares_with_the_claim_cache_on(node: Node, run_driver) -> None:
    run_driver(node, watch_claims=True)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
    node.kubelet.wait_for(lambda kubelet: DRIVER in kubelet.drivers)
    _until(lambda: node.api.watching())
    uid = node.api.allocate("team", "c", driver=DRIVER, node=NODE)["metadata"]["uid"]
    answer = node.kubelet.prepare(DRIVER, [("team", uid, "c")])[uid]
    assert answer.error == "" and [d.device_name for d in answer.devices] == ["fake-0"]
    assert node.kubelet.unprepare(DRIVER, [("team", uid, "c")])[uid].error == ""


def test_the_cache_recovers_from_refused_lists_and_watches(clean_env: None, tmp_path: Path) -> None:
    with ResourceApiServer() as api:
        kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
        resource = kube.ResourceApi(lambda: cluster_config.connect(kubeconfig), timeout_seconds=5)
        cache = ClaimCache(resource, driver=DRIVER, pool=NODE)
        api.fail(403, method="GET", times=3)  # the list, then the watches after it, are refused for a while
        stop = threading.Event()
        thread = threading.Thread(target=cache.run, args=(stop,), kwargs={"retry_initial": 0.05, "retry_max": 0.2})
        thread.start()
        try:
            _allocated(api, "late", "u-late")
            _until(lambda: cache.get("ns", "late", "u-late"))
            assert cache.synced.is_set()
            assert [r.status for r in api.requests if r.status == 403] == [403, 403, 403]
        finally:
            stop.set()
            thread.join(timeout=5)
        assert not thread.is_alive()


def test_a_cached_claim_the_watch_has_not_caught_up_on_is_read_from_the_server(tmp_path: Path) -> None:
    backend = FakeBackend(FakeOptions())
    backend.open()
    devices = list(backend.devices())
    fresh = {"metadata": {"namespace": "ns", "name": "late", "uid": "u-late"},
             "status": {"reservedFor": [{"resource": "pods", "name": "p", "uid": "p-1"}],
                        **_results(DRIVER, NODE)}}
    stale = {"metadata": fresh["metadata"], "status": _results(DRIVER, NODE)}  # allocated, not yet reserved

    class _Server:
        gets = 0

        def get_claim(self, namespace: str, name: str) -> dict[str, Any]:
            self.gets += 1
            return fresh

    server = _Server()
    preparer = Preparer(api=server, backend=backend, devices=lambda: slices.members(devices), driver=DRIVER,
                        node=NODE, cdi_dir=tmp_path / "cdi", checkpoint=Checkpoint(tmp_path / "checkpoint.json"),
                        cached=lambda namespace, name, uid: stale)
    assert preparer.prepare(ClaimRef("ns", "u-late", "late")).devices
    assert server.gets == 1


def test_a_cache_whose_watch_is_down_answers_nothing() -> None:
    cache = ClaimCache(kube.ResourceApi(lambda: None, timeout_seconds=1),  # type: ignore[arg-type,return-value]
                       driver=DRIVER, pool=NODE)
    cache._claims[("ns", "c")] = {"metadata": {"namespace": "ns", "name": "c", "uid": "u"}}
    assert cache.get("ns", "c", "u") is None  # never listed (or the watch failed): the caller GETs
    cache.synced.set()
    assert cache.get("ns", "c", "u") is not None


def test_a_slow_claim_read_does_not_hold_up_the_other_claims(tmp_path: Path) -> None:
    backend = FakeBackend(FakeOptions())
    backend.open()
    devices = list(backend.devices())

    def claim(name: str) -> dict[str, Any]:
        return {"metadata": {"namespace": "ns", "name": name, "uid": f"u-{name}"},
                "status": {"reservedFor": [{"resource": "pods", "name": "p", "uid": "p-1"}],
                           **_results(DRIVER, NODE)}}

    asked, release = threading.Event(), threading.Event()

    class _SlowServer:
        def get_claim(self, namespace: str, name: str) -> dict[str, Any]:
            asked.set()
            release.wait(10)  # an API server taking its time over this one claim
            return claim(name)

    preparer = Preparer(api=_SlowServer(), backend=backend, devices=lambda: slices.members(devices), driver=DRIVER,
                        node=NODE, cdi_dir=tmp_path / "cdi", checkpoint=Checkpoint(tmp_path / "checkpoint.json"),
                        cached=lambda namespace, name, uid: claim(name) if name == "cached" else None)
    slow = threading.Thread(target=preparer.prepare, args=(ClaimRef("ns", "u-slow", "slow"),))
    slow.start()
    try:
        assert asked.wait(5)
        assert preparer.prepare(ClaimRef("ns", "u-cached", "cached")).devices  # while the slow GET is pending
        assert slow.is_alive()
    finally:
        release.set()
        slow.join(timeout=10)
    assert preparer.prepare(ClaimRef("ns", "u-slow", "slow")).devices

"""Keeps this node's ResourceSlices equal to the device snapshot, writing only when something changed.

At start it lists the slices of our driver on our node: when they already say what the snapshot says
(an agent restart without device changes) nothing is written; otherwise the pool moves to the next
generation and the stale slices go. After that the API server is written only when the snapshot's
slices differ from the last published ones, so a steady node costs zero writes. A failed write is
retried with a doubling delay, from a fresh list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from krakenplug.backends import base
from krakenplug.dra import slices as slices_mod
from krakenplug.dra.kube import ApiError, ResourceApi
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

Json = dict[str, Any]
PoolBuilder = Callable[[Sequence[base.Device], int, bool], slices_mod.Pool]  # devices, generation, partitionable


class SlicePublisher:
    """Owns the slices of one (node, driver) pool."""

    def __init__(self, api: ResourceApi, *, node: str, driver: str, build: PoolBuilder) -> None:
        self._api = api
        self._node = node
        self._driver = driver
        self._build = build
        self._published: dict[str, Json] = {}  # name -> the object as the server returned it
        self._generation = 0
        self._known = False  # the server's state was listed since the last failure
        self._log = TransitionLog(logger)
        self.writes = 0
        # Shared counters are published until the API server drops them (DRAPartitionableDevices off, as
        # before Kubernetes 1.36): then whole partitionable devices are left out, so none is handed out
        # together with one of its partitions.
        self.partitionable = True

    @property
    def generation(self) -> int:
        return self._generation

    def sync(self, devices: Sequence[base.Device]) -> bool:
        """Makes the server's slices say ``devices``; True when something was written. Raises ApiError."""
        try:
            if not self._known:
                self._adopt()
            wrote = self._apply(devices)
        except ApiError as err:
            self._known = False
            self._log.report("publish", str(err), logging.WARNING, "publishing ResourceSlices of driver %s "
                             "on node %s failed: %s", self._driver, self._node, err)
            raise
        self._log.clear("publish", logging.INFO, "publishing ResourceSlices of driver %s works again", self._driver)
        return wrote

    def _adopt(self) -> None:
        existing = self._api.list_slices(node=self._node, driver=self._driver)
        self._published = {item["metadata"]["name"]: item for item in existing}
        generations = [int(((item.get("spec") or {}).get("pool") or {}).get("generation") or 0) for item in existing]
        self._generation = max(generations, default=0)
        self._known = True

    def _apply(self, devices: Sequence[base.Device]) -> bool:
        wanted = {obj["metadata"]["name"]: obj
                  for obj in self._build(devices, self._generation, self.partitionable).objects()}
        if self._matches(wanted):
            return False
        self._generation += 1
        wanted = {obj["metadata"]["name"]: obj
                  for obj in self._build(devices, self._generation, self.partitionable).objects()}
        # Create or update first, delete last: the pool is never shown smaller than it is.
        for name, obj in wanted.items():
            current = self._published.get(name)
            if current is None:
                self._published[name] = self._api.create_slice(obj)
            else:
                obj["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
                self._published[name] = self._api.replace_slice(obj)
            self.writes += 1
        for name in sorted(set(self._published) - set(wanted)):
            self._api.delete_slice(name)
            self._published.pop(name)
            self.writes += 1
        logger.info("published %d ResourceSlice(s) of driver %s for node %s at generation %d (%d devices)",
                    len(wanted), self._driver, self._node, self._generation, len(devices))
        if self.partitionable and any(_counters_dropped(obj["spec"], self._published[name].get("spec") or {})
                                      for name, obj in wanted.items()):
            self.partitionable = False
            logger.error("the API server dropped the shared counters of driver %s's ResourceSlices "
                         "(feature gate DRAPartitionableDevices off, default before Kubernetes 1.36): whole "
                         "partitionable devices are no longer published, only their partitions", self._driver)
            self._apply(devices)
        return True

    def _matches(self, wanted: dict[str, Json]) -> bool:
        if set(wanted) != set(self._published):
            return False
        for name, obj in wanted.items():
            spec = self._published[name].get("spec") or {}
            if int((spec.get("pool") or {}).get("generation") or 0) != self._generation:
                return False  # a pool with mixed generations is inconsistent: republish
            if slices_mod.without_generation(spec) != slices_mod.without_generation(obj["spec"]):
                return False
        return True

    def forget(self) -> None:
        """The next sync lists the server's slices again before comparing."""
        self._known = False

    def remove_all(self) -> None:
        """Deletes every slice of the pool (the driver is being removed)."""
        for item in self._api.list_slices(node=self._node, driver=self._driver):
            self._api.delete_slice(item["metadata"]["name"])
        self._published.clear()


class Snapshots(Protocol):
    """What the loop needs of the device hub."""

    def snapshot(self) -> Any: ...

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]: ...


def run_publisher(publisher: SlicePublisher, hub: Snapshots, stop: threading.Event, wake: threading.Event, *,
                  retry_initial: float, retry_max: float, resync_seconds: float = 300.0,
                  resync: threading.Event | None = None,
                  on_published: Callable[[int], None] = lambda version: None) -> None:
    """Publishes every new snapshot of ``hub`` until ``stop``; set ``wake`` after setting ``stop`` or
    ``resync``, so the loop looks at once (it sleeps otherwise: no timer but the resync).

    Every ``resync_seconds`` without a change, and whenever ``resync`` is set (the kubelet registered us:
    a kubelet deletes the slices of a driver that stayed unregistered), the slices are listed again, a
    read that leads to a write only when somebody else changed or deleted them.
    """
    unsubscribe = hub.subscribe(lambda snapshot: wake.set())  # on the hub's thread
    version, delay = -1, retry_initial
    next_resync = time.monotonic() + resync_seconds
    try:
        while not stop.is_set():
            wake.clear()  # before looking: a change after the look ends the wait below
            snapshot = hub.snapshot()
            asked = resync is not None and resync.is_set()
            if asked and resync is not None:
                resync.clear()
            if snapshot.version == version:
                left = next_resync - time.monotonic()
                if left > 0 and not asked:
                    wake.wait(left)
                    continue
                publisher.forget()
            try:
                publisher.sync(snapshot.devices)
            except ApiError:
                stop.wait(delay)
                delay = min(delay * 2, retry_max)
                continue
            delay = retry_initial
            version = snapshot.version
            next_resync = time.monotonic() + resync_seconds
            on_published(version)
    finally:
        unsubscribe()


def _counters_dropped(sent: Json, stored: Json) -> bool:
    """Whether the server kept less of the shared counters than was sent (a disabled feature gate)."""
    if sent.get("sharedCounters") and not stored.get("sharedCounters"):
        return True
    kept = {device.get("name"): device for device in stored.get("devices") or []}
    return any(device.get("consumesCounters") and not (kept.get(device["name"]) or {}).get("consumesCounters")
               for device in sent.get("devices") or [])

"""The current inventory of one resource, and a way for ListAndWatch streams to wait for the next one."""

from __future__ import annotations

import threading

from krakenplug.grpc_unix import Wakeups
from krakenplug.plugin import inventory as inventory_mod


class SnapshotFeed:
    """Holds the latest :class:`Inventory`; ``version`` moves only when what the kubelet sees changes.

    Published from any thread; streams wait on an event loop (``next_after``) and are woken through it.
    """

    def __init__(self, inventory: inventory_mod.Inventory) -> None:
        self._lock = threading.Lock()
        self._inventory = inventory
        self._version = 0
        self._closed = False
        self._waiters = Wakeups()

    @property
    def inventory(self) -> inventory_mod.Inventory:
        return self._inventory

    def current(self) -> tuple[int, inventory_mod.Inventory]:
        with self._lock:
            return self._version, self._inventory

    def publish(self, inventory: inventory_mod.Inventory) -> bool:
        """Makes ``inventory`` current; returns True (and wakes the streams) when the kubelet must hear of it."""
        with self._lock:
            visible = inventory.advertised != self._inventory.advertised
            self._inventory = inventory
            if visible:
                self._version += 1
                self._waiters.wake()
            return visible

    def close(self) -> None:
        """Ends every stream waiting on this feed."""
        with self._lock:
            self._closed = True
            self._waiters.wake()

    async def next_after(self, version: int) -> tuple[int, inventory_mod.Inventory] | None:
        """The next snapshot after ``version``; None once the feed is closed. A cancelled stream (the
        client went away) is cancelled here."""
        with self._waiters.waiting() as changed:
            while True:
                changed.clear()
                with self._lock:
                    if self._closed:
                        return None
                    if self._version != version:
                        return self._version, self._inventory
                await changed.wait()

"""The current inventory of one resource, and a way for ListAndWatch streams to wait for the next one."""

from __future__ import annotations

import threading
from collections.abc import Callable

from krakenplug.plugin import inventory as inventory_mod

_RECHECK_SECONDS = 30.0  # a cancelled RPC wakes its stream at once; this is only a backstop


class SnapshotFeed:
    """Holds the latest :class:`Inventory`; ``version`` moves only when what the kubelet sees changes."""

    def __init__(self, inventory: inventory_mod.Inventory) -> None:
        self._changed = threading.Condition()
        self._inventory = inventory
        self._version = 0
        self._closed = False

    @property
    def inventory(self) -> inventory_mod.Inventory:
        return self._inventory

    def current(self) -> tuple[int, inventory_mod.Inventory]:
        with self._changed:
            return self._version, self._inventory

    def publish(self, inventory: inventory_mod.Inventory) -> bool:
        """Makes ``inventory`` current; returns True (and wakes the streams) when the kubelet must hear of it."""
        with self._changed:
            visible = inventory.advertised != self._inventory.advertised
            self._inventory = inventory
            if visible:
                self._version += 1
                self._changed.notify_all()
            return visible

    def close(self) -> None:
        """Ends every stream waiting on this feed."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wake(self) -> None:
        """Lets waiting streams re-check their client (called when an RPC is cancelled)."""
        with self._changed:
            self._changed.notify_all()

    def wait_newer(self, version: int, *, active: Callable[[], bool]) -> tuple[int, inventory_mod.Inventory] | None:
        """The next snapshot after ``version``; None once the feed is closed or the client went away."""
        with self._changed:
            while True:
                if self._closed or not active():
                    return None
                if self._version != version:
                    return self._version, self._inventory
                self._changed.wait(_RECHECK_SECONDS)

"""The device hub: the one owner of the device snapshot.

The hub is the only caller of ``backend.devices()`` in the agent. It re-reads on its poll interval and
whenever the backend's optional event source (``SupportsHealthEvents``) says something may have changed
(on the event source's own thread: a hop to the poll thread cost about 0.8 ms of health propagation),
one read at a time, and publishes an immutable, versioned :class:`Snapshot` when the devices
(identities or health) differ from the last one. Components (device plugin, exporter, discovery, SR-IOV, DRA) subscribe or wait on
it; none polls the backend for devices on its own. The exporter still calls ``backend.sample()`` per
scrape, because values must be fresh, but takes identities and health from the snapshot.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from krakenplug.backends import base
from krakenplug.transitions import TransitionLog

__all__ = ["DeviceHub", "Snapshot"]

logger = logging.getLogger(__name__)

Subscriber = Callable[["Snapshot"], None]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the backend reported at one moment; ``version`` grows by one with every change."""

    version: int
    devices: tuple[base.Device, ...] = ()
    error: str = ""  # the last read failed as a whole; ``devices`` is then the last good list
    taken_at: float = 0.0  # time.monotonic() of the read that produced it

    @functools.cached_property  # built on first use, once per snapshot (it is immutable)
    def by_id(self) -> Mapping[str, base.Device]:
        return MappingProxyType({device.id: device for device in self.devices})

    def healthy(self) -> tuple[base.Device, ...]:
        return tuple(device for device in self.devices if device.healthy)


class DeviceHub:
    """Reads the backend, publishes snapshots; :meth:`start` runs it on background threads."""

    def __init__(self, backend: base.Backend, *, poll_seconds: float = 5.0, name: str = "") -> None:
        self.backend = backend
        self.name = name or backend.name
        self._poll_seconds = poll_seconds
        self._cond = threading.Condition()
        self._snapshot = Snapshot(version=0)
        self._read_once = False
        self._subscribers: list[Subscriber] = []
        self._wake = threading.Event()
        # One read (and publication) at a time, whichever thread asks; re-entrant so that a subscriber
        # may still call refresh() itself.
        self._reading = threading.RLock()
        self._threads: list[threading.Thread] = []
        self._log = TransitionLog(logger)

    @property
    def poll_seconds(self) -> float:
        """The longest time between two reads of the backend (components retry on the same beat)."""
        return self._poll_seconds

    # -- reading -------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._cond:
            return self._snapshot

    def refresh(self) -> Snapshot:
        """Reads the backend now (on the caller's thread) and publishes when something changed."""
        with self._reading:
            return self._read_and_publish()

    def _read_and_publish(self) -> Snapshot:
        try:
            devices = tuple(self.backend.devices())
        except Exception as err:  # noqa: BLE001 - keep the last good list whatever the backend's failure
            self._log.report("devices", f"{err}", logging.WARNING,
                             "reading devices from backend %s failed, keeping the last snapshot: %s", self.name, err)
            return self._publish(self.snapshot().devices, error=str(err) or type(err).__name__)
        self._log.clear("devices", logging.INFO, "reading devices from backend %s works again", self.name)
        return self._publish(devices, error="")

    def _publish(self, devices: tuple[base.Device, ...], *, error: str) -> Snapshot:
        with self._cond:
            current = self._snapshot
            if self._read_once and devices == current.devices and error == current.error:
                return current
            self._read_once = True
            snapshot = Snapshot(version=current.version + 1, devices=devices, error=error, taken_at=time.monotonic())
            self._snapshot = snapshot
            subscribers = list(self._subscribers)
            self._cond.notify_all()
        for callback in subscribers:
            try:
                callback(snapshot)
            except Exception:  # a broken subscriber must not starve the others
                logger.exception("device snapshot subscriber %r failed", callback)
        return snapshot

    # -- consuming -----------------------------------------------------------------------------
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Calls ``callback(snapshot)`` on every new snapshot (on the thread that read it: the poll or the
        event thread, never two threads at once; keep it short).

        Returns a function that unsubscribes. The current snapshot is not replayed: read it with
        :meth:`snapshot` after subscribing.
        """
        with self._cond:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._cond:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def wait_for_change(self, after_version: int, timeout: float | None = None) -> Snapshot:
        """Blocks until a snapshot newer than ``after_version`` exists or ``timeout`` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self._snapshot.version > after_version, timeout=timeout)
            return self._snapshot

    def changed(self) -> None:
        """The backend's event source says devices may differ: re-read now on the caller's thread, or,
        while another thread is reading, have the poll thread read again right after (any thread)."""
        if self._reading.acquire(blocking=False):
            try:
                self._read_and_publish()
            finally:
                self._reading.release()
        else:
            self._wake.set()

    # -- running -------------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> Snapshot:
        """Takes the first snapshot, then keeps it current on background threads until ``stop``."""
        first = self.refresh()
        poller = threading.Thread(target=self._poll, args=(stop,), name="device-hub", daemon=True)
        self._threads.append(poller)
        if isinstance(self.backend, base.SupportsHealthEvents):
            events = threading.Thread(target=self._watch, args=(stop,), name="device-hub-events", daemon=True)
            self._threads.append(events)
        for thread in self._threads:
            thread.start()
        return first

    def join(self, timeout: float = 10.0) -> None:
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _poll(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(self._poll_seconds)
            if stop.is_set():
                break
            self._wake.clear()
            self.refresh()

    def _watch(self, stop: threading.Event) -> None:
        assert isinstance(self.backend, base.SupportsHealthEvents)
        try:
            self.backend.watch_health(stop, self.changed)
        except Exception:  # top of a thread: the periodic poll still catches every change, only later
            logger.exception("health events of backend %s failed; relying on the %g s poll",
                             self.name, self._poll_seconds)

    def stop_waiters(self, stop: threading.Event) -> None:
        """Wakes everything blocked in the hub so that it sees ``stop``."""
        stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()


"""The NVIDIA health loop: an NVML event set for XIDs, and the periodic snapshot and recovery check.

Event waits are short (at most a second, or the poll interval if shorter) so ``stop`` is honoured
promptly, and run on their own worker thread so they never hold up device queries or scrapes.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from krakenplug import errors
from krakenplug.backends import _devicebook, base
from krakenplug.backends.nvidia import nvml, xid

logger = logging.getLogger(__name__)


class _Outcome(enum.Enum):
    NOTHING = "nothing"  # no event, or one that changes no health
    MARKED = "marked"
    FAILED = "failed"  # the wait itself failed: every GPU is marked


def handle_address(handle: Any) -> int | None:
    """The pointer value of an NVML device handle (how an event names its GPU); None for NULL."""
    return ctypes.cast(handle, ctypes.c_void_p).value if handle is not None else None


class EventWatcher:
    """Runs until ``stop``: waits for events, marks GPUs, and every interval recovers and re-snapshots."""

    def __init__(self, api: nvml.Nvml, marks: xid.XidMarks, handles: dict[str, Any], *, interval_seconds: float,
                 recover_probe: Callable[[str], None]) -> None:
        self._api = api
        self._marks = marks
        self._handles = {uuid: handle for uuid, handle in handles.items() if handle is not None}
        self._uuids_by_address = {handle_address(handle): uuid for uuid, handle in self._handles.items()}
        self._interval = interval_seconds
        self._wait_ms = max(1, int(min(1.0, interval_seconds) * 1000))
        self._probe = recover_probe

    def run(self, stop: threading.Event, changed: Callable[[], None],
            snapshot: Callable[[], Sequence[base.Device]]) -> None:
        event_set = self._register()
        if event_set is None:
            _devicebook.poll_health(stop, changed, snapshot, interval_seconds=self._interval)
            return
        try:
            self._loop(stop, changed, snapshot, event_set)
        finally:
            self._free(event_set)

    def _loop(self, stop: threading.Event, changed: Callable[[], None],
              snapshot: Callable[[], Sequence[base.Device]], event_set: Any) -> None:
        previous = _devicebook.safe_snapshot(snapshot)
        changed()  # so a change before watching began is not lost
        next_check = time.monotonic() + self._interval
        while not stop.is_set():
            outcome = self._wait_once(event_set)
            notify = outcome is not _Outcome.NOTHING
            due = time.monotonic() >= next_check
            if due and outcome is not _Outcome.FAILED:  # no recovery while the event set itself fails
                next_check = time.monotonic() + self._interval
                notify = self._marks.recover(quiet_seconds=self._interval, healthy=self._answers) or notify
            if notify or due:
                current = _devicebook.safe_snapshot(snapshot)
                if current is not None and (notify or current != previous):
                    previous = current
                    changed()
            if outcome is _Outcome.FAILED:
                stop.wait(self._interval)  # do not spin on a failing event set

    def _register(self) -> Any | None:
        """An event set with every GPU registered for what it supports; None when NVML offers no events."""
        try:
            event_set = self._api.call("nvmlEventSetCreate")
        except errors.DeviceQueryError as err:
            logger.warning("nvidia: no XID events (%s); health comes from NVML queries only", err)
            return None
        for uuid, handle in self._handles.items():
            try:
                supported = self._api.call("nvmlDeviceGetSupportedEventTypes", handle)
                mask = xid.WATCHED_EVENTS & supported
                if not mask:
                    logger.info("nvidia: GPU %s reports no XID/ECC events; relying on NVML queries", uuid)
                    continue
                self._api.call("nvmlDeviceRegisterEvents", handle, mask, event_set)
            except errors.DeviceQueryError as err:
                logger.warning("nvidia: cannot watch events of GPU %s: %s", uuid, err)
        return event_set

    def _wait_once(self, event_set: Any) -> _Outcome:
        """Waits for one event and applies it."""
        try:
            event = self._api.wait_event(event_set, self._wait_ms)
        except errors.DeviceQueryError as err:
            self._marks.mark(self._handles, str(err))
            return _Outcome.FAILED
        if event is None:
            return _Outcome.NOTHING
        uuid = self._uuids_by_address.get(handle_address(event.device))
        marked = self._marks.on_event([uuid] if uuid else list(self._handles), event.eventType, event.eventData)
        return _Outcome.MARKED if marked else _Outcome.NOTHING

    def _answers(self, uuid: str) -> bool:
        return xid.probe_ok(lambda: self._probe(uuid), uuid)

    def _free(self, event_set: Any) -> None:
        try:
            self._api.call("nvmlEventSetFree", event_set)
        except errors.DeviceQueryError as err:
            logger.debug("nvidia: %s", err)


"""The NVIDIA health event loop: an NVML event set for XIDs, and the periodic recovery check.

Event waits are short (at most a second, or the poll interval if shorter) so ``stop`` is honoured
promptly, and run on their own worker thread so they never hold up device queries or scrapes. Every
interval the watcher registers GPUs that appeared since (so a GPU that shows up later gets XID events
too) and lets marked devices recover. Re-reading the devices is the device hub's job: the watcher only
says ``changed()`` when a mark was set or cleared.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from krakenplug import errors
from krakenplug.backends.nvidia import nvml, xid
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)


class _Outcome(enum.Enum):
    NOTHING = "nothing"  # no event, or one that changes no health
    MARKED = "marked"
    FAILED = "failed"  # the wait itself failed: every device is marked


class EventWatcher:
    """Runs until ``stop``: waits for events, marks devices, and every interval registers and recovers.

    ``gpus()`` lists the physical GPUs now (UUID -> handle); ``targets(event)`` names the device IDs an
    event concerns ([] to ignore it); ``all_ids()`` every device ID, marked when the event wait fails.
    """

    def __init__(self, api: nvml.Nvml, marks: xid.XidMarks, *, gpus: Callable[[], dict[str, Any]],
                 targets: Callable[[Any], list[str]], all_ids: Callable[[], list[str]], interval_seconds: float,
                 recover_probe: Callable[[str], None]) -> None:
        self._api = api
        self._marks = marks
        self._gpus = gpus
        self._targets = targets
        self._all_ids = all_ids
        self._interval = interval_seconds
        self._wait_ms = max(1, int(min(1.0, interval_seconds) * 1000))
        self._probe = recover_probe
        self._registered: set[str] = set()
        self._register_log = TransitionLog(logger)

    def run(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        try:
            event_set = self._api.call("nvmlEventSetCreate")
        except errors.DeviceQueryError as err:
            logger.warning("nvidia: no XID events (%s); health comes from NVML queries only", err)
            changed()
            return
        try:
            self._register(event_set, self._gpus().items())
            changed()  # so a change before watching began is not lost
            self._loop(stop, changed, event_set)
        finally:
            self._free(event_set)

    def _loop(self, stop: threading.Event, changed: Callable[[], None], event_set: Any) -> None:
        next_check = time.monotonic() + self._interval
        while not stop.is_set():
            outcome = self._wait_once(event_set)
            notify = outcome is not _Outcome.NOTHING
            if time.monotonic() >= next_check and outcome is not _Outcome.FAILED:
                next_check = time.monotonic() + self._interval
                self._register(event_set, self._gpus().items())
                notify = self._marks.recover(quiet_seconds=self._interval, healthy=self._answers) or notify
            if notify:
                changed()
            if outcome is _Outcome.FAILED:
                stop.wait(self._interval)  # do not spin on a failing event set

    def _register(self, event_set: Any, gpus: Iterable[tuple[str, Any]]) -> None:
        """Registers every GPU not registered yet for the events it supports.

        A GPU counts as registered only once NVML accepted it (or said it has no such events): a failed
        registration is tried again at the next interval, and its warning is logged once.
        """
        for uuid, handle in gpus:
            if uuid in self._registered or handle is None:
                continue
            try:
                supported = self._api.call("nvmlDeviceGetSupportedEventTypes", handle)
                mask = xid.WATCHED_EVENTS & supported
                if mask:
                    self._api.call("nvmlDeviceRegisterEvents", handle, mask, event_set)
            except errors.DeviceQueryError as err:
                self._register_log.report(uuid, str(err), logging.WARNING,
                                          "nvidia: cannot watch events of GPU %s (retrying every %g s): %s",
                                          uuid, self._interval, err)
                continue
            self._registered.add(uuid)
            self._register_log.clear(uuid)
            if mask:
                logger.debug("nvidia: watching events 0x%x of GPU %s", mask, uuid)
            else:
                logger.info("nvidia: GPU %s reports no XID/ECC events; relying on NVML queries", uuid)

    def _wait_once(self, event_set: Any) -> _Outcome:
        """Waits for one event and applies it."""
        try:
            event = self._api.wait_event(event_set, self._wait_ms)
        except errors.DeviceQueryError as err:
            self._marks.mark(self._all_ids(), str(err))
            return _Outcome.FAILED
        if event is None or event.eventType != xid.XID_CRITICAL_ERROR:
            if event is not None:
                logger.debug("nvidia: event type 0x%x (data %d) ignored", event.eventType, event.eventData)
            return _Outcome.NOTHING
        targets = self._targets(event)
        if not targets:
            return _Outcome.NOTHING
        marked = self._marks.on_event(targets, event.eventType, event.eventData)
        return _Outcome.MARKED if marked else _Outcome.NOTHING

    def _answers(self, device_id: str) -> bool:
        return xid.probe_ok(lambda: self._probe(device_id), device_id)

    def _free(self, event_set: Any) -> None:
        try:
            self._api.call("nvmlEventSetFree", event_set)
        except errors.DeviceQueryError as err:
            logger.debug("nvidia: %s", err)

"""XID health for NVIDIA GPUs: NVML events mark devices Unhealthy, a periodic check lets them recover.

Marking (as NVIDIA's own plugin does): the event set listens for XidCriticalError, DoubleBitEcc and
SingleBitEcc, masked by what each GPU supports; only XidCriticalError events act. An XID in
``ignored_xids`` (application errors) changes nothing; with ``fatal_xids`` set only those XIDs act;
otherwise every other XID marks its device Unhealthy with reason "XID <n>". The event's GPU is found by
its UUID (``nvmlDeviceGetUUID`` of the event's handle); an event for a GPU the backend does not list is
ignored. A MIG event (GPU instance and compute instance IDs set) marks the GPU and that MIG device; an
event for the whole GPU (IDs 0xFFFFFFFF) marks the GPU and all its MIG devices. An event whose GPU
cannot be named (no handle, or its UUID query fails), or an event wait that fails with anything but a
timeout, marks every device.

Recovery (NVIDIA's plugin never recovers; we do): every ``health_poll_interval_seconds`` each marked
device whose last mark is at least one interval old is probed: its UUID, memory and utilization queries
must not fail. A query the device does not offer (utilization of MIG devices and MIG-enabled GPUs,
memory of integrated GPUs: NOT_SUPPORTED / NO_PERMISSION) does not hold recovery back. When the probe
passes the mark is cleared. A new XID restarts the wait.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable

from krakenplug import errors

logger = logging.getLogger(__name__)

XID_CRITICAL_ERROR = 0x8
DOUBLE_BIT_ECC = 0x2
SINGLE_BIT_ECC = 0x1
WATCHED_EVENTS = XID_CRITICAL_ERROR | DOUBLE_BIT_ECC | SINGLE_BIT_ECC


@dataclasses.dataclass(frozen=True)
class Mark:
    reason: str
    at: float  # time.monotonic() of the event that set it


class XidPolicy:
    """Which XIDs make a GPU unhealthy."""

    def __init__(self, *, ignored: Iterable[int], fatal: Iterable[int]) -> None:
        self.ignored = frozenset(ignored)
        self.fatal = frozenset(fatal)

    def is_fatal(self, xid: int) -> bool:
        if xid in self.ignored:
            return False
        return xid in self.fatal if self.fatal else True


class XidMarks:
    """Unhealthy marks by GPU UUID, set by events and cleared by the recovery probe. Thread-safe."""

    def __init__(self, policy: XidPolicy) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self._marks: dict[str, Mark] = {}

    def reason(self, uuid: str) -> str | None:
        with self._lock:
            mark = self._marks.get(uuid)
        return mark.reason if mark else None

    def on_event(self, uuids: Iterable[str], event_type: int, xid: int) -> bool:
        """Applies one NVML event to the GPUs it concerns; True when a mark was set."""
        targets = list(uuids)
        if event_type != XID_CRITICAL_ERROR:
            logger.debug("nvidia: event type 0x%x (data %d) on %s ignored", event_type, xid, ", ".join(targets))
            return False
        if not self._policy.is_fatal(xid):
            logger.info("nvidia: XID %d on %s is not a fatal XID; health unchanged", xid, ", ".join(targets))
            return False
        self.mark(targets, f"XID {xid}")
        return True

    def mark(self, uuids: Iterable[str], reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            for uuid in uuids:
                previous = self._marks.get(uuid)
                if previous is None or previous.reason != reason:
                    logger.warning("nvidia: GPU %s is unhealthy: %s", uuid, reason)
                self._marks[uuid] = Mark(reason, now)

    def recover(self, *, quiet_seconds: float, healthy: Callable[[str], bool]) -> bool:
        """Clears marks at least ``quiet_seconds`` old whose GPU answers ``healthy``; True if any cleared."""
        now = time.monotonic()
        with self._lock:
            due = [uuid for uuid, mark in self._marks.items() if now - mark.at >= quiet_seconds]
        cleared = False
        for uuid in due:
            if not healthy(uuid):
                continue
            with self._lock:
                mark = self._marks.get(uuid)
                if mark is None or now - mark.at < quiet_seconds:  # a new XID arrived meanwhile
                    continue
                del self._marks[uuid]
            logger.info("nvidia: GPU %s recovered from %s: queries succeed and no XID for %g s", uuid,
                        mark.reason, quiet_seconds)
            cleared = True
        return cleared


def probe_ok(probe: Callable[[], object], uuid: str) -> bool:
    """True when the recovery probe's NVML queries all succeed."""
    try:
        probe()
    except errors.DeviceQueryError as err:
        logger.debug("nvidia: GPU %s still failing: %s", uuid, err)
        return False
    return True

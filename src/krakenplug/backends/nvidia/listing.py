"""What the NVIDIA backend keeps listing between snapshots, by UUID.

A GPU that stops answering stays listed Unhealthy: as the whole GPU it was advertised as, or, when it is
MIG-enabled, as its MIG devices (never as a whole GPU it was not advertised as). A GPU NVML stops listing
stays listed Unhealthy too; because NVML renumbers the remaining GPUs when one falls off, what was seen
is kept by UUID, not by index. MIG devices the admin deleted (their GPU answers without them) go away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence

from krakenplug.backends import _devicebook, base
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)


class Listing:
    """Thread-safe. ``book`` holds each GPU index's last whole-GPU identity (and stuck calls)."""

    def __init__(self, book: _devicebook.DeviceBook) -> None:
        self._book = book
        self._lock = threading.Lock()
        self._log = TransitionLog(logger)
        self._whole: dict[str, base.Device] = {}  # UUID -> GPU last advertised whole
        self._mig: dict[int, tuple[base.Device, ...]] = {}  # GPU index -> its MIG devices last advertised
        self._partitioned: set[int] = set()  # GPU indexes last seen with MIG in use (not advertised whole)

    def update(self, listed: Mapping[int, str], whole: Sequence[base.Device],
               mig_devices: Mapping[int, Sequence[base.Device]], partitioned: Iterable[int]) -> None:
        """One snapshot: ``listed`` GPUs (index -> UUID) answered; ``whole`` and ``mig_devices`` are advertised."""
        with self._lock:
            kept = {index: seen for index, seen in self._mig.items() if index not in listed}
            self._mig = {**kept, **{index: tuple(found) for index, found in mig_devices.items()}}
            self._partitioned = (self._partitioned - set(listed)) | set(partitioned)
            for uuid in listed.values():  # answered but not advertised whole (MIG, or refused)
                self._whole.pop(uuid, None)
            self._whole.update({device.id: device for device in whole})

    def failed(self, index: int, reason: str) -> list[base.Device]:
        """What stays listed for the GPU at ``index`` whose query failed, Unhealthy with ``reason``."""
        with self._lock:
            seen, partitioned = self._mig.get(index, ()), index in self._partitioned
        known = [_devicebook.unhealthy(device, reason) for device in seen]
        if not known and not partitioned and (whole := self._book.failed(index, reason)) is not None:
            known = [whole]
        if not known:
            self._log.report(("skipped", index), reason, logging.WARNING,
                             "nvidia: skipping GPU %d until it answers: %s", index, reason)
        elif self._book.problem_changed(index, reason):
            logger.warning("nvidia: GPU %d is unhealthy: %s", index, reason)
        return known

    def unlisted(self, present: set[str], reason: str) -> list[base.Device]:
        """Devices seen before and not in ``present``, Unhealthy: a GPU that fell off stays visible."""
        with self._lock:
            seen = [*self._whole.values(), *(device for found in self._mig.values() for device in found)]
        return [_devicebook.unhealthy(device, reason) for device in seen if device.id not in present]

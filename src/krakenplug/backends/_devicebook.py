"""What a vendor backend remembers about its devices between snapshots (the device hub polls ``devices()``).

A device that was seen once keeps its identity when a later query about it fails: it is reported
Unhealthy with the reason instead of vanishing from the kubelet's view, and it recovers as soon as the
queries succeed again. A vendor call that timed out marks its device Unhealthy until that same call
returns in time again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import TypeVar

from krakenplug.backends import base

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


def unhealthy(device: base.Device, reason: str) -> base.Device:
    """``device`` marked Unhealthy; an existing reason is kept first."""
    if device.health is base.Health.UNHEALTHY and device.health_reason:
        reason = device.health_reason if reason in device.health_reason else f"{device.health_reason}; {reason}"
    return dataclasses.replace(device, health=base.Health.UNHEALTHY, health_reason=reason)


class DeviceBook:
    """Last known identity per vendor address (index, card/chip pair ...) plus calls that got stuck."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[Hashable, base.Device] = {}
        self._stuck: dict[Hashable, dict[str, str]] = {}
        self._problems: dict[Hashable, str] = {}

    def record(self, key: Hashable, device: base.Device) -> base.Device:
        """Remembers ``device`` as seen at ``key``; returns it with any stuck call applied."""
        with self._lock:
            self._known[key] = dataclasses.replace(device, health=base.Health.HEALTHY, health_reason="")
            stuck = "; ".join(self._stuck.get(key, {}).values())
        return unhealthy(device, stuck) if stuck else device

    def last_known(self, key: Hashable) -> base.Device | None:
        with self._lock:
            return self._known.get(key)

    def failed(self, key: Hashable, reason: str) -> base.Device | None:
        """The last known device at ``key`` marked Unhealthy with ``reason``; None if never seen."""
        known = self.last_known(key)
        return unhealthy(known, reason) if known is not None else None

    def unlisted(self, present: Collection[Hashable], reason: str) -> list[base.Device]:
        """Known devices whose keys are not in ``present`` (the driver stopped listing them), Unhealthy."""
        with self._lock:
            gone = [device for key, device in self._known.items() if key not in present]
        return [unhealthy(device, reason) for device in gone]

    def collect(self, keys: Sequence[K], describe: Callable[[K], base.Device | None], *,
                gone: str) -> tuple[list[base.Device], dict[str, K]]:
        """One snapshot: ``describe(key)`` for every listed key (None: never seen, not answering), then the
        known devices the library no longer lists, Unhealthy with ``gone``. Also returns key by device ID."""
        found: list[base.Device] = []
        located: dict[str, K] = {}
        for key in keys:
            device = describe(key)
            if device is not None:
                found.append(device)
                located[device.id] = key
        return found + self.unlisted(set(keys), gone), located

    def all_failed(self, reason: str) -> list[base.Device]:
        """Every known device marked Unhealthy: enumeration itself failed."""
        return self.unlisted((), reason)

    def problem_changed(self, key: Hashable, problem: str) -> bool:
        """Remembers the health problem at ``key`` ("" when healthy); True when it differs from last time.

        Backends log health on transitions only, not on every poll.
        """
        with self._lock:
            previous = self._problems.get(key, "")
            self._problems[key] = problem
        return problem != previous

    def forget(self) -> None:
        """Drops every remembered device: the library re-numbered its devices (Kunlun SR-IOV)."""
        with self._lock:
            self._known.clear()
            self._stuck.clear()
            self._problems.clear()

    def call_timed_out(self, key: Hashable, function: str, reason: str) -> None:
        with self._lock:
            self._stuck.setdefault(key, {})[function] = reason

    def call_returned(self, key: Hashable, function: str) -> None:
        with self._lock:
            calls = self._stuck.get(key)
            if calls and calls.pop(function, None) is not None:
                logger.info("%s returns in time again", function)
                if not calls:
                    del self._stuck[key]

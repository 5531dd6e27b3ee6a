"""Zero devices while the vendor library is unavailable, re-trying ``open()`` now and then.

This is the framework's null object (NVIDIA's fallback-to-null manager), kept out of every vendor:
a node without a working driver runs the agent idle instead of crash-looping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from krakenplug import errors
from krakenplug.backends import base

logger = logging.getLogger(__name__)


class RetryingBackend:
    """Wraps an unopened backend; delegates to it once a later ``open()`` succeeds."""

    def __init__(self, inner: Any, *, first_error: Exception, retry_seconds: float = 60.0) -> None:
        self._inner = inner
        self._retry_seconds = retry_seconds
        self._last_try = time.monotonic()
        self._opened = False
        self._lock = threading.Lock()
        self.last_error: Exception | None = first_error
        self.name = inner.name

    def __getattr__(self, attribute: str) -> Any:
        # Optional capabilities (preferred allocation, driver version, ...) come from the inner backend.
        return getattr(self._inner, attribute)

    def _ready(self) -> bool:
        with self._lock:
            if self._opened:
                return True
            if time.monotonic() - self._last_try < self._retry_seconds:
                return False
            self._last_try = time.monotonic()
            try:
                self._inner.open()
            except errors.BackendUnavailable as err:
                self.last_error = err
                logger.debug("backend %s still unavailable: %s", self.name, err)
                return False
            logger.info("backend %s is available now", self.name)
            self._opened, self.last_error = True, None
            return True

    def open(self) -> None:
        self._ready()

    def close(self) -> None:
        if self._opened:
            self._inner.close()

    def devices(self) -> Sequence[base.Device]:
        return self._inner.devices() if self._ready() else []

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        if not self._ready():
            raise errors.BackendUnavailable(f"backend {self.name} is unavailable: {self.last_error}")
        return self._inner.allocate(devices)

    def sample(self, device: base.Device) -> base.DeviceSample:
        if not self._ready():
            raise errors.BackendUnavailable(f"backend {self.name} is unavailable: {self.last_error}")
        return self._inner.sample(device)

    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        while not stop.wait(min(self._retry_seconds, 5.0)):
            if self._ready():
                changed()
                if isinstance(self._inner, base.SupportsHealthEvents):
                    self._inner.watch_health(stop, changed)
                return

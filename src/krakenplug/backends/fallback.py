"""Zero devices while the vendor library is unavailable, re-trying ``open()`` now and then.

This is the framework's null object (NVIDIA's fallback-to-null manager), kept out of every vendor:
a node without a working driver runs the agent idle instead of crash-looping.

The wrapper has two explicit states, *waiting* (``open()`` failed; ``last_error`` says why) and *open*
(everything goes to the vendor backend). Optional capabilities are forwarded explicitly, one small
mixin per capability protocol of base.py, and only those the vendor backend implements: a component's
``isinstance(backend, base.SupportsX)`` answers for the wrapper exactly as for the backend inside. A new
capability protocol needs its forwarder in ``_FORWARDERS``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from krakenplug import errors
from krakenplug.backends import base

__all__ = ["RetryingBackend", "State"]

logger = logging.getLogger(__name__)


class State(enum.Enum):
    WAITING = "waiting"  # the last open() failed; devices() is empty until a retry succeeds
    OPEN = "open"


class RetryingBackend:
    """Wraps an unopened backend; delegates to it once a later ``open()`` succeeds.

    ``RetryingBackend(inner, ...)`` builds an instance of a subclass that also forwards the optional
    capabilities ``inner`` implements, and carries ``inner``'s ``name`` and ``Options``.
    """

    name: ClassVar[str] = "backend"
    Options: ClassVar[type[base.BackendOptions]] = base.BackendOptions
    _classes: ClassVar[dict[type, type[RetryingBackend]]] = {}

    def __new__(cls, inner: base.Backend, **_kwargs: Any) -> RetryingBackend:
        if cls is RetryingBackend:
            cls = cls._class_for(inner)
        return super().__new__(cls)

    def __init__(self, inner: base.Backend, *, first_error: Exception, retry_seconds: float = 60.0) -> None:
        self._inner = inner
        self._retry_seconds = retry_seconds
        self._last_try = time.monotonic()
        self._state = State.WAITING
        self._lock = threading.Lock()
        self.last_error: Exception | None = first_error

    @classmethod
    def _class_for(cls, inner: base.Backend) -> type[RetryingBackend]:
        inner_class = type(inner)
        if inner_class not in cls._classes:
            mixins = tuple(forwarder for capability, forwarder in _FORWARDERS if isinstance(inner, capability))
            options: type[base.BackendOptions] = getattr(inner_class, "Options")  # noqa: B009 - BackendClass
            cls._classes[inner_class] = type(f"Retrying{inner_class.__name__}", (*mixins, cls),
                                             {"name": inner.name, "Options": options})
        return cls._classes[inner_class]

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def _ready(self) -> bool:
        """True once open; else tries ``open()`` again when ``retry_seconds`` have passed since the last try."""
        with self._lock:
            if self._state is State.OPEN:
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
            self._state, self.last_error = State.OPEN, None
            return True

    def _require(self) -> base.Backend:
        if not self._ready():
            raise errors.BackendUnavailable(f"backend {self.name} is unavailable: {self.last_error}")
        return self._inner

    # -- Backend ---------------------------------------------------------------------------------

    def open(self) -> None:
        self._ready()

    def close(self) -> None:
        if self.state is State.OPEN:
            self._inner.close()

    def devices(self) -> Sequence[base.Device]:
        return self._inner.devices() if self._ready() else []

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        return self._require().allocate(devices)

    def sample(self, device: base.Device) -> base.DeviceSample:
        return self._require().sample(device)

    def driver_version(self) -> str | None:
        return self._inner.driver_version() if self._ready() else None


# -- capability forwarders -----------------------------------------------------------------------


class _HealthEvents(RetryingBackend):
    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        """Waits (checking every few seconds) until the backend opens, then follows its events."""
        while not self._ready():
            if stop.wait(min(self._retry_seconds, 5.0)):
                return
        changed()
        inner = self._inner
        assert isinstance(inner, base.SupportsHealthEvents)
        inner.watch_health(stop, changed)


class _PreferredAllocation(RetryingBackend):
    def preferred_allocation(self, available: Sequence[base.Device], must_include: Sequence[base.Device],
                             size: int) -> list[str]:
        inner = self._require()
        assert isinstance(inner, base.SupportsPreferredAllocation)
        return inner.preferred_allocation(available, must_include, size)


class _AllocationLimit(RetryingBackend):
    def max_devices_per_container(self) -> int | None:
        inner = self._inner
        assert isinstance(inner, base.SupportsAllocationLimit)
        return inner.max_devices_per_container()  # a fixed property of the vendor, known before open()


class _LibraryInfo(RetryingBackend):
    def library_info(self) -> base.LibraryInfo:
        inner = self._inner
        assert isinstance(inner, base.SupportsLibraryInfo)
        if self._ready():
            return inner.library_info()
        return base.LibraryInfo(library=None, api="none", path="none", reason=f"unavailable: {self.last_error}")


class _Sriov(RetryingBackend):
    def sriov_options(self) -> base.SriovOptions:
        inner = self._inner
        assert isinstance(inner, base.SupportsSriov)
        return inner.sriov_options()

    def physical_functions(self) -> Sequence[base.PhysicalFunction]:
        inner = self._inner
        assert isinstance(inner, base.SupportsSriov)
        return inner.physical_functions() if self._ready() else []

    def set_vf_count(self, pf_bus_id: str, count: int) -> None:
        inner = self._require()
        assert isinstance(inner, base.SupportsSriov)
        inner.set_vf_count(pf_bus_id, count)


_FORWARDERS: tuple[tuple[type, type[RetryingBackend]], ...] = (
    (base.SupportsHealthEvents, _HealthEvents),
    (base.SupportsPreferredAllocation, _PreferredAllocation),
    (base.SupportsAllocationLimit, _AllocationLimit),
    (base.SupportsLibraryInfo, _LibraryInfo),
    (base.SupportsSriov, _Sriov),
)

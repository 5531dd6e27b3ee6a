"""The one way a backend calls its vendor's C library: loading, bounded calls, optional symbols, error names.

* ``NativeLibrary`` opens the library and looks every symbol up on its own: a symbol the installed
  library lacks is "not supported" (the way the vendors' own Go wrappers treat a failed dlsym), never an
  import-time failure.
* ``BoundedCalls`` runs a call on a worker thread with a deadline. A call into a vendor library can hang
  (a lost device, a wedged driver); one that exceeds its timeout raises ``CallTimedOut``, marks its device
  Unhealthy in the DeviceBook until the same call returns in time again, and later calls go to a fresh
  worker. Calls are otherwise serialized, since vendor libraries are not all thread-safe. While
  ``MAX_STUCK_WORKERS`` abandoned calls have not returned, further calls fail at once instead of each
  parking one more thread in a wedged library. pynvml's functions go through it too (nvidia/nvml.py).
* ``VendorCalls`` adds typed signatures and status codes mapped to the vendor's names for them.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from krakenplug import errors
from krakenplug.backends import _devicebook
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_STUCK_WORKERS = 4
Signature = tuple[Any, Sequence[Any]]  # (restype, argtypes)


class VendorCallError(errors.DeviceQueryError):
    """A vendor function returned an error status."""

    def __init__(self, function: str, code: int | None, code_name: str) -> None:
        self.function, self.code, self.code_name = function, code, code_name
        shown = code_name if code is None or code_name == str(code) else f"{code_name} ({code})"
        super().__init__(f"{function} failed: {shown}")


class NotSupported(VendorCallError):
    """The library lacks the function, or says the device does not support it."""


class CallTimedOut(errors.DeviceQueryError):
    """A vendor function did not return within the call timeout."""


# -- loading ---------------------------------------------------------------------------------------


class NativeLibrary:
    """A loaded shared library plus typed, cached symbol lookup."""

    def __init__(self, handle: ctypes.CDLL, path: str) -> None:
        self.handle = handle
        self.path = path
        self._functions: dict[str, Any] = {}
        self._missing_logged: set[str] = set()

    @classmethod
    def load(cls, candidates: Sequence[str], *, vendor: str) -> NativeLibrary:
        """Opens the first candidate that loads; raises BackendUnavailable listing what was tried."""
        problems = []
        for candidate in candidates:
            if os.sep in candidate and not os.path.exists(candidate):
                problems.append(f"{candidate}: no such file")
                continue
            try:
                return cls(ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL), candidate)
            except OSError as err:
                problems.append(f"{candidate}: {err}")
        raise errors.BackendUnavailable(f"cannot load the {vendor} library; tried " + "; ".join(problems))

    def exports(self, name: str) -> bool:
        return hasattr(self.handle, name)

    def function(self, name: str, restype: Any, argtypes: Sequence[Any]) -> Any | None:
        """The typed function ``name``, or None when the library does not export it."""
        if name in self._functions:
            return self._functions[name]
        try:
            fn = getattr(self.handle, name)
        except AttributeError:
            fn = None
            if name not in self._missing_logged:
                self._missing_logged.add(name)
                logger.info("%s does not export %s; treating it as not supported", self.path, name)
        else:
            fn.restype = restype
            fn.argtypes = list(argtypes)
        self._functions[name] = fn
        return fn


def candidates(configured: str | None, defaults: Sequence[str]) -> list[str]:
    """The configured library path first (when set), then the vendor's usual locations."""
    return [configured] if configured else list(defaults)


# -- bounded calls ---------------------------------------------------------------------------------


class _Worker:
    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            future, fn = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as err:  # handed to the caller, which decides
                future.set_exception(err)


class BoundedCaller:
    """Runs callables with a deadline; ``caller(fn, *args, what="nvmlDeviceGetName(0)")``."""

    def __init__(self, timeout_seconds: float, *, name: str = "vendor-call") -> None:
        self.timeout_seconds = timeout_seconds
        self._name = name
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._stuck: list[_Worker] = []  # abandoned workers whose call has not returned yet

    def __call__(self, fn: Callable[..., T], *args: Any, what: str = "", timeout: float | None = None) -> T:
        future: Future[T] = Future()
        what = what or getattr(fn, "__name__", "vendor call")
        with self._lock:
            self._stuck = [stuck for stuck in self._stuck if stuck.thread.is_alive()]
            if len(self._stuck) >= MAX_STUCK_WORKERS:
                raise CallTimedOut(f"{what} not started: {len(self._stuck)} earlier calls into the library "
                                   f"have not returned")
            if self._worker is None:
                self._worker = _Worker(self._name)
            worker = self._worker
        worker.jobs.put((future, lambda: fn(*args)))
        limit = self.timeout_seconds if timeout is None else timeout
        try:
            return future.result(timeout=limit)
        except TimeoutError:
            future.cancel()
            with self._lock:
                if self._worker is worker:  # abandon the stuck worker; it exits after its call returns
                    worker.jobs.put(None)
                    self._worker = None
                    self._stuck.append(worker)
            raise CallTimedOut(f"{what} did not return within {limit:g} s") from None

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.jobs.put(None)
                self._worker = None


def describe_device(key: Hashable) -> str:
    return f"device {key}"


class BoundedCalls:
    """Bounded calls about devices: a call about ``key`` that times out marks that device in ``book``."""

    def __init__(self, *, vendor: str, timeout_seconds: float, book: _devicebook.DeviceBook,
                 describe_key: Callable[[Hashable], str] = describe_device, worker_name: str = "") -> None:
        self.vendor = vendor
        self.book = book
        self.timeout_seconds = timeout_seconds
        self._describe_key = describe_key
        self._caller = BoundedCaller(timeout_seconds, name=worker_name or f"{vendor}-call")

    def run(self, fn: Callable[..., T], *args: Any, name: str, key: Hashable | None = None,
            timeout: float | None = None) -> T:
        """``fn(*args)`` bounded by the timeout; ``name`` is the vendor function, ``key`` its device."""
        where = f"{name}({self._describe_key(key)})" if key is not None else name
        try:
            result = self._caller(fn, *args, what=where, timeout=timeout)
        except CallTimedOut as err:
            logger.warning("%s: %s", self.vendor, err)
            if key is not None:
                self.book.call_timed_out(key, name, str(err))
            raise
        if key is not None:
            self.book.call_returned(key, name)
        return result

    def close(self) -> None:
        self._caller.close()


class VendorCalls:
    """Typed, bounded, named calls into one loaded vendor library."""

    def __init__(self, library: NativeLibrary, signatures: Mapping[str, Signature], *, vendor: str,
                 timeout_seconds: float, book: _devicebook.DeviceBook, code_names: Mapping[int, str],
                 unsupported_codes: Collection[int] = (),
                 describe_key: Callable[[Hashable], str] = describe_device) -> None:
        """``describe_key`` names a call's device in messages, e.g. "card 0 device 1"."""
        self.library = library
        self._signatures = signatures
        self._code_names = code_names
        self._unsupported = frozenset(unsupported_codes)
        self.bounded = BoundedCalls(vendor=vendor, timeout_seconds=timeout_seconds, book=book,
                                    describe_key=describe_key)

    def code_name(self, code: int) -> str:
        return self._code_names.get(code, str(code))

    def supports(self, name: str) -> bool:
        return self._function(name) is not None

    def status(self, name: str, *args: Any, key: Hashable | None = None) -> None:
        """Calls a function that returns a status code; anything but 0 raises VendorCallError."""
        code = self.value(name, *args, key=key)
        if code != 0:
            error = NotSupported if code in self._unsupported else VendorCallError
            raise error(name, code, self.code_name(code))

    def value(self, name: str, *args: Any, key: Hashable | None = None) -> Any:
        """Calls ``name`` and returns what it returns; ``key`` names the device the call is about."""
        fn = self._function(name)
        if fn is None:
            raise NotSupported(name, None, f"{self.library.path} does not export it")
        return self.bounded.run(fn, *args, name=name, key=key)

    def close(self) -> None:
        self.bounded.close()

    def _function(self, name: str) -> Any | None:
        restype, argtypes = self._signatures[name]
        return self.library.function(name, restype, argtypes)


class OptionalQueries:
    """Queries a device can be served without (bus ID, minor number, a metric ...).

    One that is not supported reads as absent (None, never a fake 0). One that fails otherwise reads as
    absent too and the device keeps being served: the failure is logged when it starts and when it ends.
    A call that timed out still raises CallTimedOut: the DeviceBook marks its device Unhealthy.
    """

    def __init__(self, vendor: str) -> None:
        self._vendor = vendor
        self._log = TransitionLog(logger)

    def get(self, query: Callable[[], T], *, key: Hashable, what: str) -> T | None:
        try:
            result = query()
        except NotSupported as err:
            logger.debug("%s: %s", self._vendor, err)
            return None
        except VendorCallError as err:
            self._log.report((key, what), str(err), logging.WARNING, "%s: %s of %s is reported absent: %s",
                             self._vendor, what, key, err)
            return None
        self._log.clear((key, what), logging.INFO, "%s: %s of %s answers again", self._vendor, what, key)
        return result


def unsupported_as_none(query: Callable[[], T]) -> T | None:
    """``query()``, or None when it is not supported; any other failure propagates."""
    try:
        return query()
    except NotSupported:
        return None

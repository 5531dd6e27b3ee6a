"""Vendor calls bounded by a timeout, for every backend.

A call into a vendor library can hang (a lost device, a wedged driver). Calls run on a daemon worker
thread; when one exceeds its timeout the caller gets DeviceQueryError and later calls go to a fresh
worker, so one stuck device cannot stall health checks or scrapes. Calls are otherwise serialized,
since vendor libraries are not all thread-safe.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from krakenplug import errors

T = TypeVar("T")


class _Worker:
    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

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

    def __call__(self, fn: Callable[..., T], *args: Any, what: str = "", timeout: float | None = None) -> T:
        future: Future = Future()
        with self._lock:
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
            raise errors.DeviceQueryError(f"{what or getattr(fn, '__name__', 'vendor call')} "
                                          f"did not return within {limit:g} s") from None

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.jobs.put(None)
                self._worker = None

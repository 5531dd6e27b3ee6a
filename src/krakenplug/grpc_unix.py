"""A gRPC server on one unix socket, for the components that serve the kubelet.

The servers are ``grpc.aio`` servers on one event loop that the process shares (thread
``krakenplug-grpc``). Why not the synchronous ``grpc.server``: its completion-queue loop wakes every
200 ms to check for signals, which alone is most of an idle agent's CPU; the asyncio server's poller
waits without a deadline (bench/idle_cpu.py, docs/plugin.md, Performance). Handlers keep their shapes:

* a plain ``def`` handler (unary calls: Allocate, NodePrepareResources, ...) runs on the server's own
  worker pool, so a slow vendor library or API read never stalls the loop;
* an ``async def`` generator (the long-lived streams: ListAndWatch, NodeWatchResources) runs on the loop
  and costs no thread while it waits; a client that goes away cancels it at its ``await``.

The pool belongs to the server: made with it and shut down after it, so a stopped server leaves no
worker threads behind, except a handler stuck in a call that never returns (a hung vendor library):
``stop`` waits ``STUCK_HANDLER_SECONDS`` for it, logs it and goes on, and ``stuck_handlers()`` tells the
CLI that the process must exit without waiting for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 1.0  # in-flight calls get this long to finish; streams are cancelled
STUCK_HANDLER_SECONDS = 5.0  # then a handler still running is waited for this long before it is left behind
_CALL_TIMEOUT_SECONDS = 30.0  # a loop that does not answer a start/stop within this is broken

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()
_stuck: list[str] = []  # servers whose pool still had a running handler when they stopped


def stuck_handlers() -> list[str]:
    """The servers (by worker name prefix) that stopped while a handler was still inside a call."""
    with _loop_lock:
        return list(_stuck)


def loop() -> asyncio.AbstractEventLoop:
    """The process's gRPC event loop, started on first use; it runs until the process ends."""
    global _loop
    with _loop_lock:
        if _loop is None:
            started = asyncio.new_event_loop()
            threading.Thread(target=started.run_forever, name="krakenplug-grpc", daemon=True).start()
            _loop = started
        return _loop


def run(coroutine: Coroutine[Any, Any, T], *, timeout: float = _CALL_TIMEOUT_SECONDS) -> T:
    """Runs ``coroutine`` on the gRPC loop from any other thread and returns its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop()).result(timeout)


class Wakeups:
    """Wakes the streams waiting on the gRPC loop from any thread (a new snapshot, a server closing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[asyncio.Event]:
        """On the loop: an event that every later :meth:`wake` sets. Clear it before looking at what it
        guards, then await it, so a wake between the look and the wait is never lost."""
        event = asyncio.Event()
        with self._lock:
            self._waiting[event] = asyncio.get_running_loop()
        try:
            yield event
        finally:
            with self._lock:
                del self._waiting[event]

    def wake(self) -> None:
        with self._lock:
            for event, loop in self._waiting.items():
                loop.call_soon_threadsafe(event.set)


class UnixServer:
    """``server`` is a fresh grpc.aio.Server whose plain handlers run on ``max_workers`` threads; register
    servicers on it, then ``bind`` and ``start``."""

    def __init__(self, *, max_workers: int, thread_name_prefix: str,
                 maximum_concurrent_rpcs: int | None = None) -> None:
        self._name = thread_name_prefix
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers,
                                                               thread_name_prefix=thread_name_prefix)
        self.server: grpc.aio.Server = run(self._create(maximum_concurrent_rpcs))

    async def _create(self, maximum_concurrent_rpcs: int | None) -> grpc.aio.Server:
        # Made on the loop: the server binds itself to the loop it is created on.
        return grpc.aio.server(migration_thread_pool=self._executor, maximum_concurrent_rpcs=maximum_concurrent_rpcs)

    def bind(self, path: Path) -> None:
        """Creates the socket file at ``path``; raises RuntimeError when gRPC could not."""
        if not self.server.add_insecure_port(f"unix://{path}"):
            raise RuntimeError("add_insecure_port returned 0")

    def start(self) -> None:
        run(self.server.start())

    def stop(self) -> None:
        """Stops the server (waiting up to the grace period) and then its pool, cancelling queued work."""
        try:
            run(self.server.stop(STOP_GRACE_SECONDS), timeout=STOP_GRACE_SECONDS + _CALL_TIMEOUT_SECONDS)
        finally:
            # The pool's own shutdown waits for every running handler, for ever if one never returns.
            finisher = threading.Thread(target=self._executor.shutdown, kwargs={"cancel_futures": True},
                                        name=f"{self._name}-shutdown", daemon=True)
            finisher.start()
            finisher.join(STUCK_HANDLER_SECONDS)
            if finisher.is_alive():
                logger.warning("gRPC server %s stopped with a call still running after %g s (a vendor library "
                               "call that does not return?); leaving it behind", self._name,
                               STOP_GRACE_SECONDS + STUCK_HANDLER_SECONDS)
                with _loop_lock:
                    _stuck.append(self._name)

"""Keeps a fresh copy of the kubelet's pod-to-device map, refreshed in the background.

dcgm-exporter calls the kubelet on every scrape over a new connection, which made scrapes slow and
hammered the kubelet on busy nodes. Here one thread calls PodResources v1 ``List`` every
``pod_resources_refresh_seconds`` over one persistent channel, and a scrape only reads the last answer.

The kubelet rate-limits this API (token bucket: 100 calls/s, burst 10, then RESOURCE_EXHAUSTED). We call
at most twice a second whatever the settings say, and back off exponentially while rate-limited. A
missing socket or a slow kubelet (5 s deadline) never blocks a scrape: metrics carry empty pod labels
and ``krakenplug_podresources_up`` says 0. The last good map is kept for a short while after a failure
(``keep_seconds``) so that one failed call does not make pod labels flap.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc
from krakenplug.exporter import attribution

logger = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 5.0
MIN_INTERVAL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 60.0
_CHANNEL_OPTIONS = [
    # The kubelet recreates the socket when it restarts; reconnect soon rather than after gRPC's 2 min cap.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class PodResourcesWatcher:
    """Calls ``List`` in a background thread; ``current()`` is what scrapes read."""

    def __init__(
        self,
        socket_path: Path | str,
        *,
        refresh_seconds: float,
        call_timeout_seconds: float = CALL_TIMEOUT_SECONDS,
        keep_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.refresh_seconds = max(refresh_seconds, MIN_INTERVAL_SECONDS)
        self.call_timeout_seconds = call_timeout_seconds
        self.keep_seconds = keep_seconds if keep_seconds is not None else max(3 * self.refresh_seconds, 30.0)
        self._clock, self._wall_clock = clock, wall_clock
        self._lock = threading.Lock()
        self._allocations: tuple[attribution.Allocation, ...] = ()
        self._last_success: float | None = None  # monotonic
        self._last_success_unix = 0.0
        self._up = False
        self._error = "no PodResources call made yet"
        self._backoff = 0.0
        self._channel: grpc.Channel | None = None
        self._stub: pr_grpc.PodResourcesListerStub | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="krakenplug-podresources", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.call_timeout_seconds + 5)
            self._thread = None
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = self._stub = None

    def current(self) -> attribution.PodAttribution:
        with self._lock:
            fresh = self._last_success is not None and self._clock() - self._last_success <= self.keep_seconds
            return attribution.PodAttribution(
                allocations=self._allocations if fresh else (),
                up=self._up,
                last_success_unix=self._last_success_unix,
                error=self._error,
            )

    def refresh_once(self) -> float:
        """Makes one ``List`` call (unless the socket is missing); returns the delay before the next."""
        if not os.path.exists(self.socket_path):
            self._failed(f"socket {self.socket_path} does not exist")
            return self.refresh_seconds
        try:
            response = self._lister().List(pr_pb2.ListPodResourcesRequest(), timeout=self.call_timeout_seconds)
        except grpc.RpcError as err:
            return self._rpc_failed(err)
        self._succeeded(attribution.flatten(response))
        return self.refresh_seconds

    # -- internals -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            delay = self.refresh_once()
            self._stop.wait(max(delay, MIN_INTERVAL_SECONDS))

    def _lister(self) -> pr_grpc.PodResourcesListerStub:
        with self._lock:
            if self._stub is None:
                self._channel = grpc.insecure_channel(f"unix:{self.socket_path.absolute()}", options=_CHANNEL_OPTIONS)
                self._stub = pr_grpc.PodResourcesListerStub(self._channel)
            return self._stub

    def _rpc_failed(self, err: grpc.RpcError) -> float:
        code = err.code() if hasattr(err, "code") else None
        details = err.details() if hasattr(err, "details") else str(err)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            self._backoff = min(MAX_BACKOFF_SECONDS, max(2 * self._backoff, self.refresh_seconds, 1.0))
            self._failed(f"rate-limited by the kubelet: {details}")
            logger.debug("next pod resources call in %g s", self._backoff)
            return self._backoff
        name = code.name if code is not None else "UNKNOWN"
        self._failed(f"List on {self.socket_path} failed: {name}: {details}")
        return self.refresh_seconds

    def _succeeded(self, allocations: tuple[attribution.Allocation, ...]) -> None:
        with self._lock:
            was_up = self._up
            if allocations != self._allocations:  # an unchanged map stays the same object: scrapes reuse its labels
                self._allocations = allocations
            self._up, self._error, self._backoff = True, "", 0.0
            self._last_success, self._last_success_unix = self._clock(), self._wall_clock()
        if not was_up:
            logger.info("pod resources available from %s (%d allocations)", self.socket_path, len(allocations))

    def _failed(self, reason: str) -> None:
        with self._lock:
            was_up, repeated = self._up, reason == self._error
            self._up, self._error = False, reason
        if was_up or not repeated:
            logger.warning("pod resources unavailable: %s", reason)
        else:
            logger.debug("pod resources still unavailable: %s", reason)

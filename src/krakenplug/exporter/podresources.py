"""Keeps a fresh copy of the kubelet's pod-to-device map, refreshed in the background.

dcgm-exporter calls the kubelet on every scrape over a new connection, which made scrapes slow and
hammered the kubelet on busy nodes. Here one thread calls PodResources v1 ``List`` every
``pod_resources_refresh_seconds`` over one persistent channel, and a scrape only reads the last answer.

The kubelet rate-limits this API (token bucket: 100 calls/s, burst 10, then RESOURCE_EXHAUSTED). We call
at most twice a second whatever the settings say, and back off exponentially while rate-limited. A
missing socket or a slow kubelet (5 s deadline) never blocks a scrape: metrics carry empty pod labels
and ``krakenplug_podresources_up`` says 0. The last good map is kept for a short while after a failure
(``keep_seconds``) so that one failed call does not make pod labels flap.

Nobody scraping for ``IDLE_AFTER_SECONDS`` (longer than any usual scrape interval), or nobody having
scraped yet since start, slows the refresh to half of ``keep_seconds`` (15 s by default), so that an
idle node does not call the kubelet for nothing and the map never goes stale meanwhile; the first scrape
after that wakes an immediate refresh, and the normal period applies again from there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from krakenplug.backoff import Backoff
from krakenplug.exporter import attribution
from krakenplug.kubelet_podresources import CALL_TIMEOUT_SECONDS, PodResourcesClient, PodResourcesError

logger = logging.getLogger(__name__)

MIN_INTERVAL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 60.0
IDLE_AFTER_SECONDS = 120.0


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
        # No jitter: the rate limit is this node's own kubelet's, there is no herd to spread.
        initial = max(self.refresh_seconds, 1.0)
        self._backoff = Backoff(initial=initial, maximum=max(MAX_BACKOFF_SECONDS, initial), jitter=0.0)
        self._client = PodResourcesClient(self.socket_path, call_timeout_seconds=call_timeout_seconds)
        self._last_read: float | None = None  # no scrape yet: the idle period until the first one wakes us
        self._slowed = False  # the loop is waiting the idle period; the next scrape wakes it
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="krakenplug-podresources", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._client.close()  # cancels a call in flight, so stopping never waits for a slow kubelet
        if self._thread is not None:
            self._thread.join(timeout=self.call_timeout_seconds + 5)
            self._thread = None
        self._client.close()

    @property
    def idle_refresh_seconds(self) -> float:
        return max(self.refresh_seconds, self.keep_seconds / 2)

    def current(self) -> attribution.PodAttribution:
        with self._lock:
            now = self._clock()
            self._last_read = now
            if self._slowed:
                self._slowed = False
                self._wake.set()
            fresh = self._last_success is not None and now - self._last_success <= self.keep_seconds
            return attribution.PodAttribution(
                allocations=self._allocations if fresh else (),
                up=self._up,
                last_success_unix=self._last_success_unix,
                error=self._error,
            )

    def refresh_once(self) -> float:
        """Makes one ``List`` call; returns the delay before the next."""
        try:
            allocations = self._client.list()
        except PodResourcesError as err:
            if err.rate_limited:
                delay = self._backoff.next_delay()
                self._failed(str(err))
                logger.debug("next pod resources call in %g s", delay)
                return delay
            self._failed(str(err))
            return self.refresh_seconds
        self._succeeded(allocations)
        return self.refresh_seconds

    # -- internals -------------------------------------------------------------------------------

    def next_delay(self, delay: float) -> float:
        """``delay`` from :meth:`refresh_once`, stretched to the idle period when nobody has scraped lately."""
        with self._lock:
            idle = self._last_read is None or self._clock() - self._last_read >= IDLE_AFTER_SECONDS
            self._slowed = idle and self.idle_refresh_seconds > delay
            return self.idle_refresh_seconds if self._slowed else delay

    def _loop(self) -> None:
        while not self._stop.is_set():
            delay = self.next_delay(self.refresh_once())
            self._wake.wait(max(delay, MIN_INTERVAL_SECONDS))
            self._wake.clear()

    def _succeeded(self, allocations: tuple[attribution.Allocation, ...]) -> None:
        with self._lock:
            was_up = self._up
            if allocations != self._allocations:  # an unchanged map stays the same object: scrapes reuse its labels
                self._allocations = allocations
            self._up, self._error = True, ""
            self._backoff.reset()
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

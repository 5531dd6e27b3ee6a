"""Vendor reads for one scrape, bounded by ``collect_timeout_seconds``.

Which devices exist, and their health, come from the device hub's current snapshot; only the values are
read per scrape. ``backend.sample(device)`` runs on one long-lived worker thread, so a scrape creates no
thread. The scrape waits for the samples up to the timeout and then goes on with whatever was read:
devices that were sampled in time keep their value series, the rest are dropped (never stale values
presented as fresh) and the reading says why, which turns ``krakenplug_collector_up`` to 0.

Scrapes that arrive while a read is in flight share it (two Prometheus replicas scraping at once cost
one round of vendor calls). If a read is still running after its deadline (a wedged driver), later
scrapes answer at once without queueing more calls behind it, until it returns.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from krakenplug import errors
from krakenplug.backends import base
from krakenplug.hub import Snapshot

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Reading:
    """What one scrape learnt from the backend."""

    devices: tuple[base.Device, ...] = ()
    samples: Mapping[str, base.DeviceSample] = dataclasses.field(default_factory=dict)  # read in time, by ID
    failures: Mapping[str, str] = dataclasses.field(default_factory=dict)  # by device ID: why sample() failed
    driver_version: str = ""
    library: base.LibraryInfo | None = None  # what the backend says of its library (SupportsLibraryInfo)
    error: str = ""  # a problem with the backend as a whole: the device list failed, or reads too slow
    unavailable: str = ""  # the vendor library is not loaded: zero devices while the agent retries
    duration_seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Every vendor read succeeded in time (``krakenplug_collector_up``)."""
        return (not self.error and not self.unavailable and not self.failures
                and len(self.samples) == len(self.devices))

    @property
    def usable(self) -> bool:
        """The backend answered: it listed its devices in time and could sample at least one of them.

        An unavailable backend counts as usable: the agent deliberately runs without devices then (and
        retries), and a failing health check would only restart it in a loop.
        """
        return not self.error and (not self.devices or bool(self.samples))

    def problem(self) -> str:
        """A one-line description of what went wrong, empty when complete."""
        if self.error or self.unavailable:
            return self.error or self.unavailable
        if self.failures:
            device_id, reason = next(iter(sorted(self.failures.items())))
            more = f" (and {len(self.failures) - 1} more devices)" if len(self.failures) > 1 else ""
            return f"sample of device {device_id} failed: {reason}{more}"
        return ""


class _Job:
    """One round of vendor reads, filled in by the worker while scrapes may be looking."""

    def __init__(self, started: float, devices: tuple[base.Device, ...]) -> None:
        self.started = started
        self.devices = devices
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.samples: dict[str, base.DeviceSample] = {}
        self.failures: dict[str, str] = {}
        self.driver_version = ""
        self.library: base.LibraryInfo | None = None
        self.unavailable = ""

    def reading(self, *, timeout: float, elapsed: float) -> Reading:
        devices = self.devices
        with self.lock:
            error = ""
            if not self.done.is_set():
                sampled = len(self.samples) + len(self.failures)
                error = f"vendor reads did not finish within {timeout:g} s ({sampled} of {len(devices)} devices sampled)"
            return Reading(devices=devices, samples=MappingProxyType(dict(self.samples)),
                           failures=MappingProxyType(dict(self.failures)), driver_version=self.driver_version,
                           library=self.library, error=error, unavailable=self.unavailable, duration_seconds=elapsed)


class VendorReader:
    """Runs vendor reads on a worker thread; ``read()`` returns within about ``timeout_seconds``."""

    def __init__(self, backend: base.Backend, snapshot: Callable[[], Snapshot], *, timeout_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._backend = backend
        self._snapshot = snapshot
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: _Job | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._last_problem = ""

    def read(self) -> Reading:
        snapshot = self._snapshot()
        if snapshot.version == 0 or snapshot.error:
            reading = Reading(error=f"devices() failed: {snapshot.error}" if snapshot.error
                              else "no device snapshot yet")
            self._log_change(reading)
            return reading
        now = self._clock()
        with self._lock:
            job = self._inflight
            if job is not None and now - job.started >= self.timeout_seconds:
                return Reading(error=f"the previous vendor read has not returned after {now - job.started:.1f} s")
            if job is None:
                job = self._inflight = _Job(now, snapshot.devices)
                self._ensure_worker()
                self._jobs.put(job)
        job.done.wait(max(0.0, job.started + self.timeout_seconds - now))
        reading = job.reading(timeout=self.timeout_seconds, elapsed=self._clock() - job.started)
        self._log_change(reading)
        return reading

    def close(self) -> None:
        """Lets the worker exit after its current job; a wedged vendor call keeps only a daemon thread."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._jobs.put(None)
            worker.join(timeout=self.timeout_seconds + 1)

    # -- worker side -------------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="krakenplug-vendor-reads", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._run(job)
            with self._lock:
                if self._inflight is job:
                    self._inflight = None
            job.done.set()

    def _run(self, job: _Job) -> None:
        # The backend is third-party-facing code: whatever it raises must cost one scrape's data, not the
        # exporter, so this is the one place that catches every Exception. Vendor calls run outside the
        # job's lock: a scrape that gives up waiting must still get what was read so far at once.
        unavailable, driver_version = _unavailable_reason(self._backend), _driver_version(self._backend)
        library = _library_info(self._backend)
        with job.lock:
            job.unavailable, job.driver_version, job.library = unavailable, driver_version, library
        for device in job.devices:
            try:
                sample = self._backend.sample(device)
            except Exception as err:  # noqa: BLE001 - vendor boundary
                with job.lock:
                    job.failures[device.id] = str(err) or type(err).__name__
                continue
            with job.lock:
                job.samples[device.id] = sample

    def _log_change(self, reading: Reading) -> None:
        problem = reading.problem()
        if problem == self._last_problem:
            return
        self._last_problem = problem
        if problem:
            logger.warning("metrics of backend %s are incomplete: %s", self._backend.name, problem)
        else:
            logger.info("metrics of backend %s are complete again", self._backend.name)


def _unavailable_reason(backend: base.Backend) -> str:
    # The fallback wrapper serves zero devices while the vendor library cannot load; that is not "up".
    if isinstance(backend, base.SupportsLastError) and isinstance(backend.last_error, errors.BackendUnavailable):
        return f"backend unavailable: {backend.last_error}"
    return ""


def _driver_version(backend: base.Backend) -> str:
    try:
        return backend.driver_version() or ""
    except Exception as err:  # noqa: BLE001 - vendor boundary; a missing version is not worth a failure
        logger.debug("driver_version() of backend %s failed: %s", backend.name, err)
        return ""


def _library_info(backend: base.Backend) -> base.LibraryInfo | None:
    if not isinstance(backend, base.SupportsLibraryInfo):
        return None
    try:
        return backend.library_info()  # NVIDIA asks NVML for its version: a vendor call like the others
    except Exception as err:  # noqa: BLE001 - vendor boundary; the info series is left out this scrape
        logger.debug("library_info() of backend %s failed: %s", backend.name, err)
        return None

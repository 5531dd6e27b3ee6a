"""Bounded vendor reads: timeouts, failures, shared in-flight reads, the fallback backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from exporter_helpers import fake_backend, hub_for, write_devices

from krakenplug import errors
from krakenplug.backends import base, fallback
from krakenplug.backends.fake import FakeBackend, FakeOptions
from krakenplug.exporter.reader import VendorReader


@pytest.fixture
def reader_for():
    readers: list[VendorReader] = []

    def make(backend, timeout: float = 5.0) -> VendorReader:
        hub = hub_for(backend)
        readers.append(VendorReader(hub.backend, hub.snapshot, timeout_seconds=timeout))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()


def wait_until(predicate, *, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout} s")


class _DevicesFail:
    """A backend whose devices() raises (what a vendor library does when the driver goes away)."""

    name = "broken"

    def devices(self) -> Sequence[base.Device]:
        raise errors.DeviceQueryError("driver went away")

    def sample(self, device: base.Device) -> base.DeviceSample:  # pragma: no cover - never reached
        raise AssertionError("sample() must not be called when devices() fails")


def test_a_healthy_backend_gives_a_complete_reading(reader_for):
    reading = reader_for(fake_backend()).read()
    assert reading.complete and reading.usable and reading.problem() == ""
    assert [d.id for d in reading.devices] == ["fake-0", "fake-1", "fake-2", "fake-3"]
    assert reading.samples["fake-2"].utilization_percent == 91
    assert reading.driver_version == "fake-1.0"


def test_sample_errors_are_reported_per_device(reader_for, tmp_path):
    backend = fake_backend(write_devices(tmp_path / "d.yaml", faults={"sample_error": "ECC storm"}))
    reading = reader_for(backend).read()
    assert len(reading.devices) == 4 and not reading.samples
    assert set(reading.failures) == {"fake-0", "fake-1", "fake-2", "fake-3"}
    assert not reading.complete and not reading.usable
    assert "ECC storm" in reading.problem() and "3 more devices" in reading.problem()


def test_devices_failure_is_a_backend_error(reader_for):
    reading = reader_for(_DevicesFail()).read()
    assert reading.devices == () and reading.error == "devices() failed: driver went away"
    assert not reading.usable


def test_slow_samples_are_dropped_at_the_timeout_and_the_read_recovers(reader_for, tmp_path):
    devices_file = write_devices(tmp_path / "d.yaml", faults={"sample_delay_seconds": 0.3})
    reader = reader_for(fake_backend(devices_file), timeout=0.05)

    first = reader.read()
    assert [d.id for d in first.devices] == ["fake-0", "fake-1", "fake-2", "fake-3"]
    assert not first.samples and "did not finish within 0.05 s (0 of 4 devices sampled)" in first.error

    # While the late read is still running, scrapes answer at once instead of queueing behind it.
    second = reader.read()
    assert second.devices == () and "has not returned" in second.error

    write_devices(devices_file)
    recovered = wait_until(lambda: (r := reader.read()).complete and r, what="a complete reading")
    assert len(recovered.samples) == 4


def test_concurrent_reads_share_one_round_of_vendor_calls(reader_for, tmp_path):
    calls: list[str] = []

    class Counting(FakeBackend):
        def sample(self, device):
            calls.append(device.id)
            return super().sample(device)

    backend = Counting(FakeOptions(devices_file=write_devices(tmp_path / "d.yaml", 2,
                                                              faults={"sample_delay_seconds": 0.2})))
    backend.open()
    reader = reader_for(backend, timeout=5.0)
    results = []
    threads = [threading.Thread(target=lambda: results.append(reader.read())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.complete for r in results) and len(results) == 3
    assert sorted(calls) == ["fake-0", "fake-1"]


def test_an_unavailable_backend_is_not_up(reader_for, tmp_path):
    missing = FakeBackend(FakeOptions(devices_file=tmp_path / "absent.yaml"))
    with pytest.raises(errors.BackendUnavailable) as raised:
        missing.open()
    wrapped = fallback.RetryingBackend(missing, first_error=raised.value)
    reading = reader_for(wrapped).read()
    assert reading.devices == () and reading.unavailable.startswith("backend unavailable: ")
    assert reading.problem() == reading.unavailable
    assert not reading.complete  # krakenplug_collector_up 0 ...
    assert reading.usable  # ... but /healthz stays 200: restarting the agent would not load the library

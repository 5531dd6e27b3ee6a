"""Registry, null fallback and bounded vendor calls: the framework parts every backend relies on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from krakenplug import backends, errors, settings
from krakenplug.backends import _vendorlib, fallback


@pytest.fixture(autouse=True)
def _isolated_env(clean_env: None) -> None:
    pass


def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(errors.ConfigError, match="unknown backend 'tpu'.*fake"):
        backends.create(settings.load(overrides={"backend": "tpu"}))


def test_backend_options_are_validated_by_the_backend_with_the_field_path() -> None:
    # The settings validate backends.<name> with the backend's own model while loading (the new seam).
    with pytest.raises(errors.ConfigError, match=r"backends\.fake\.watch_interval_seconds.*'soon'"):
        backends.create(settings.load(overrides={"backends": {"fake": {"watch_interval_seconds": "soon"}}}))


def test_unavailable_backend_degrades_to_zero_devices(tmp_path: Path) -> None:
    config = settings.load(overrides={"backends": {"fake": {"devices_file": str(tmp_path / "nope.yaml")}}})
    backend = backends.open_backend(config)
    assert isinstance(backend, fallback.RetryingBackend)
    assert list(backend.devices()) == []


def test_unavailable_backend_is_fatal_when_asked(tmp_path: Path) -> None:
    config = settings.load(overrides={"fail_on_init_error": True,
                                      "backends": {"fake": {"devices_file": str(tmp_path / "nope.yaml")}}})
    with pytest.raises(errors.BackendUnavailable, match="nope.yaml"):
        backends.open_backend(config)


def test_fallback_starts_serving_once_the_library_appears(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    config = settings.load(overrides={"backends": {"fake": {"devices_file": str(path)}}})
    backend = backends.open_backend(config)
    backend._retry_seconds = 0.0  # retry on every call instead of once a minute
    assert list(backend.devices()) == []
    path.write_text("devices: [{id: late, model: m, memory_mb: 1}]\n")
    assert [d.id for d in backend.devices()] == ["late"]


def test_bounded_call_returns_values_and_passes_errors_through() -> None:
    caller = _vendorlib.BoundedCaller(1.0)
    assert caller(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        caller(lambda: 1 / 0)


def test_a_hanging_call_times_out_and_later_calls_still_work() -> None:
    caller = _vendorlib.BoundedCaller(0.2)
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(errors.DeviceQueryError, match="stuckCall did not return within 0.2 s"):
        caller(release.wait, 10, what="stuckCall")
    assert time.monotonic() - started < 5
    assert caller(lambda: "fresh worker") == "fresh worker"
    release.set()
    caller.close()


def test_calls_fail_at_once_while_too_many_abandoned_calls_are_stuck() -> None:
    caller = _vendorlib.BoundedCaller(0.05)
    release = threading.Event()
    for _ in range(_vendorlib.MAX_STUCK_WORKERS):
        with pytest.raises(errors.DeviceQueryError, match="did not return"):
            caller(release.wait, 10, what="stuckCall")
    ran = threading.Event()
    refused = f"nextCall not started: {_vendorlib.MAX_STUCK_WORKERS} earlier calls"
    with pytest.raises(errors.DeviceQueryError, match=refused):
        caller(ran.set, what="nextCall")
    assert not ran.is_set()
    release.set()
    deadline = time.monotonic() + 5
    while True:  # the stuck workers exit once their calls return; then calls are accepted again
        try:
            assert caller(lambda: "accepted again") == "accepted again"
            break
        except errors.DeviceQueryError:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    caller.close()

"""The retrying wrapper: explicit states, and exactly the inner backend's optional capabilities forwarded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from krakenplug import errors
from krakenplug.backends import base, fallback
from krakenplug.backends.fake import FakeBackend, FakeOptions


class PreferringFake(FakeBackend):
    """The fake backend plus a preferred-allocation capability (prefers the last devices)."""

    def preferred_allocation(self, available: Sequence[base.Device], must_include: Sequence[base.Device],
                             size: int) -> list[str]:
        chosen = [d.id for d in must_include] + [d.id for d in reversed(available) if d not in must_include]
        return chosen[:size]


def wrapped(backend: FakeBackend) -> fallback.RetryingBackend:
    with pytest.raises(errors.BackendUnavailable) as raised:
        backend.open()
    return fallback.RetryingBackend(backend, first_error=raised.value, retry_seconds=0.0)


def test_it_waits_with_zero_devices_then_opens_and_serves(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    backend = wrapped(FakeBackend(FakeOptions(devices_file=path)))

    assert (backend.state, list(backend.devices()), backend.driver_version()) == (fallback.State.WAITING, [], None)
    assert isinstance(backend, base.SupportsLastError) and "devices.yaml" in str(backend.last_error)
    with pytest.raises(errors.BackendUnavailable, match="backend fake is unavailable"):
        backend.allocate([])

    path.write_text("devices: [{id: late, model: m, memory_mb: 1}]\n")
    assert [d.id for d in backend.devices()] == ["late"]
    assert (backend.state, backend.last_error, backend.name) == (fallback.State.OPEN, None, "fake")
    assert backend.driver_version() == "fake-1.0"
    backend.close()


def test_only_the_inner_backends_capabilities_are_forwarded(tmp_path: Path) -> None:
    plain = wrapped(FakeBackend(FakeOptions(devices_file=tmp_path / "a.yaml")))
    preferring = wrapped(PreferringFake(FakeOptions(devices_file=tmp_path / "b.yaml")))

    assert isinstance(plain, base.SupportsHealthEvents) and isinstance(preferring, base.SupportsHealthEvents)
    assert not isinstance(plain, base.SupportsPreferredAllocation)
    assert not isinstance(plain, base.SupportsSriov) and not isinstance(plain, base.SupportsAllocationLimit)
    assert isinstance(preferring, base.SupportsPreferredAllocation)

    (tmp_path / "b.yaml").write_text("devices: [{id: a, model: m, memory_mb: 1}, {id: b, model: m, memory_mb: 1}]\n")
    devices = list(preferring.devices())
    assert preferring.preferred_allocation(devices, [], 1) == ["b"]
    assert type(preferring).Options is FakeOptions

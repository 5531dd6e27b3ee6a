"""``_locate``: a listing by vendor address with addresses by device ID, and device nodes that exist."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from krakenplug import errors
from krakenplug.backends import _devicebook, _locate, base

logger = logging.getLogger("test_locate")


def _device(key: int) -> base.Device:
    return base.Device(id=f"DEV-{key}", index=key, vendor="test", model="M", memory_total_mb=1, resource="r/x")


class Library:
    """A vendor library stand-in: lists ``keys`` or fails with ``error``."""

    def __init__(self) -> None:
        self.keys: list[int] = [0, 1]
        self.error: errors.DeviceQueryError | None = None
        self.listings = 0

    def list_keys(self) -> Sequence[int]:
        self.listings += 1
        if self.error is not None:
            raise self.error
        return list(self.keys)


def _backend(library: Library) -> tuple[_locate.Listing[int], list[Sequence[base.Device]]]:
    book = _devicebook.DeviceBook()
    seen: list[Sequence[base.Device]] = []

    def devices() -> None:
        seen.append(listing.collect(library.list_keys, lambda key: book.record(key, _device(key)),
                                    failed="cannot list TPUs", gone="the library no longer lists this TPU"))

    listing = _locate.Listing[int](book, vendor="test", kind="TPU", relist=devices, log=logger)
    devices()
    return listing, seen


def test_address_of_a_listed_device_needs_no_new_listing() -> None:
    library = Library()
    listing, _ = _backend(library)
    assert listing.address_of(_device(1)) == 1
    assert library.listings == 1


def test_a_device_new_since_the_last_listing_is_found_by_listing_once_more() -> None:
    library = Library()
    listing, _ = _backend(library)
    library.keys = [0, 1, 2]
    assert listing.address_of(_device(2)) == 2
    assert library.listings == 2


def test_an_unlisted_device_is_an_error_naming_vendor_kind_and_id() -> None:
    library = Library()
    listing, _ = _backend(library)
    with pytest.raises(errors.DeviceQueryError, match="test: unknown TPU DEV-7"):
        listing.address_of(_device(7))
    assert library.listings == 2


def test_a_failed_listing_keeps_known_devices_unhealthy_with_the_error(caplog: pytest.LogCaptureFixture) -> None:
    library = Library()
    listing, seen = _backend(library)
    library.error = errors.DeviceQueryError("tpuGetCount failed: TIMEOUT")
    with caplog.at_level(logging.WARNING, logger="test_locate"):
        with pytest.raises(errors.DeviceQueryError):
            listing.address_of(_device(5))
    devices = seen[-1]
    assert [device.id for device in devices] == ["DEV-0", "DEV-1"]
    assert all(device.health is base.Health.UNHEALTHY for device in devices)
    assert devices[0].health_reason == "cannot list TPUs: tpuGetCount failed: TIMEOUT"
    assert "test: cannot list TPUs: tpuGetCount failed: TIMEOUT" in caplog.text


def test_present_nodes_leaves_out_missing_device_files(tmp_path: Path) -> None:
    (tmp_path / "tpu0").touch()
    (tmp_path / "tpu_ctl").touch()
    nodes = _locate.present_nodes(str(tmp_path), ["tpu0", "tpu1", "tpu_ctl"])
    assert nodes == (base.DeviceNode(str(tmp_path / "tpu0"), "/dev/tpu0"),
                     base.DeviceNode(str(tmp_path / "tpu_ctl"), "/dev/tpu_ctl"))

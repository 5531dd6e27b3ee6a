"""Where a backend's devices are: each one's vendor address by device ID, and its device nodes.

Vendor libraries address a device by index (or a card/chip pair) while the plugin and exporter name
it by ID; ``Listing`` lists the devices through the backend's ``DeviceBook`` and keeps that mapping
from the last listing. ``present_nodes`` turns device file names into the host nodes a container
gets, leaving out those the host does not have.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

from krakenplug import errors
from krakenplug.backends import _devicebook, base

K = TypeVar("K", bound=Hashable)


class Listing(Generic[K]):
    """A backend's devices by vendor address, and the address of each by device ID as of the last listing."""

    def __init__(self, book: _devicebook.DeviceBook, *, vendor: str, kind: str, relist: Callable[[], object],
                 log: logging.Logger) -> None:
        self._book = book
        self._vendor = vendor
        self._kind = kind  # "NPU", "MLU": names the device in the error
        self._relist = relist  # the backend's devices(): a new listing
        self._log = log  # the backend's, so its messages keep their logger
        self._lock = threading.Lock()
        self._by_id: dict[str, K] = {}

    def collect(self, keys: Callable[[], Sequence[K]], describe: Callable[[K], base.Device | None], *,
                failed: str, gone: str) -> list[base.Device]:
        """One listing (``DeviceBook.collect``); when ``keys()`` fails every known device turns Unhealthy with
        ``failed`` and the error."""
        try:
            listed = keys()
        except errors.DeviceQueryError as err:
            self._log.warning("%s: %s: %s", self._vendor, failed, err)
            return self._book.all_failed(f"{failed}: {err}")
        found, located = self._book.collect(listed, describe, gone=gone)
        with self._lock:
            self._by_id = located
        return found

    def address_of(self, device: base.Device) -> K:
        """The address of ``device``, relisting once on a miss (it may be new); ``DeviceQueryError`` when
        the library no longer lists it."""
        address = self._get(device.id)
        if address is None:
            self._relist()
            address = self._get(device.id)
        if address is None:
            raise errors.DeviceQueryError(f"{self._vendor}: unknown {self._kind} {device.id}")
        return address

    def _get(self, device_id: str) -> K | None:
        with self._lock:
            return self._by_id.get(device_id)


def present_nodes(dev_root: str, names: Iterable[str]) -> tuple[base.DeviceNode, ...]:
    """The device nodes ``dev_root/<name>`` that exist, each at ``/dev/<name>`` in the container."""
    return tuple(base.DeviceNode(host_path, f"/dev/{name}") for name in names
                 if os.path.exists(host_path := os.path.join(dev_root, name)))

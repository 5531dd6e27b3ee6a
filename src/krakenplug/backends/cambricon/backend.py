"""Cambricon MLUs through CNDev.

Identity: ``MLU-<uuid>`` (what Cambricon's own plugin advertises). ``index`` is CNDev's device index, the
value ``CAMBRICON_VISIBLE_DEVICES`` takes; device files are numbered by the minor number
(``/dev/cambricon_dev<minor>``). A container also gets, where present, what Cambricon's plugin hands:
``/dev/cambricon_ctl``, ``/dev/cambricon_gdr`` and per MLU ``cambricon_ipcm<n>``, ``cambr-msgq:<n>``,
``cambr-rpc:<n>``, ``cmsg_ctrl<n>``, ``commu<n>``, ``ttyMS<n>``.

Health: ``cndevGetCardHealthState`` (health 1 is healthy) and the compute mode (PROHIBITED is Unhealthy,
as in Cambricon's plugin); the hub re-reads ``devices()`` on its interval. The CNDev count is checked
against the MLUs sysfs shows (vendor 0xcabc, class 0x12, VFs skipped), as the plugin does.
Preferred allocation keeps a request on MLUs joined by MLU-Link (``cndevGetMLULinkRemoteInfo``).
Only the handle API generation is supported (see cndev.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import ClassVar

from krakenplug import errors
from krakenplug.backends import _devicebook, _locate, _sysfs, _vendorlib, base
from krakenplug.backends.cambricon import cndev
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

DEFAULT_RESOURCE = "krakenplug.pcl.ac.cn/cambricon"
DEFAULT_LIBRARIES = (
    "/usr/local/neuware/lib64/libcndev.so",
    "/usr/lib/x86_64-linux-gnu/libcndev.so",
    "/usr/lib/aarch64-linux-gnu/libcndev.so",
    "/usr/lib64/libcndev.so",
    "libcndev.so",
)
CONTROL_DEVICE = "cambricon_ctl"
SHARED_DEVICES = (CONTROL_DEVICE, "cambricon_gdr")
PER_DEVICE_FILES = ("cambricon_dev{n}", "cambricon_ipcm{n}", "cambr-msgq:{n}", "cambr-rpc:{n}", "cmsg_ctrl{n}",
                    "commu{n}", "ttyMS{n}")
VENDOR_ID = 0xCABC
VISIBLE_DEVICES_ENV = "CAMBRICON_VISIBLE_DEVICES"


class CambriconOptions(base.BackendOptions):
    """No vendor-specific fields yet: library_path, dev_root and sysfs_root cover the host paths."""


class CambriconBackend:
    """Thread-safe; every CNDev call goes through one bounded choke point (``cndev.Cndev``)."""

    name: ClassVar[str] = "cambricon"
    Options: ClassVar[type[CambriconOptions]] = CambriconOptions

    def __init__(self, options: CambriconOptions, *, node_name: str = "") -> None:
        self._options = options
        self._book = _devicebook.DeviceBook()
        self._optional = _vendorlib.OptionalQueries("cambricon")
        self._log = TransitionLog(logger)
        self._cndev: cndev.Cndev | None = None
        self._listing = _locate.Listing[int](self._book, vendor="cambricon", kind="MLU", relist=self.devices,
                                             log=logger)
        self._links: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def open(self) -> None:
        library = _vendorlib.NativeLibrary.load(
            _vendorlib.candidates(self._options.library_path, DEFAULT_LIBRARIES), vendor="Cambricon CNDev")
        calls = _vendorlib.VendorCalls(library, cndev.SIGNATURES, vendor="cambricon", book=self._book,
                                       timeout_seconds=self._options.call_timeout_seconds,
                                       code_names=cndev.CODE_NAMES, unsupported_codes=cndev.UNSUPPORTED_CODES)
        api = cndev.Cndev(calls)
        try:
            api.init()
            api.check_generation()
        except cndev.UnsupportedGeneration:
            calls.close()
            raise
        except errors.DeviceQueryError as err:
            calls.close()
            raise errors.BackendUnavailable(f"CNDev in {library.path} failed: {err}; is the Cambricon driver "
                                            "loaded (/dev/cambricon_ctl)?") from err
        logger.info("cambricon: CNDev loaded from %s (handle API, struct version %d)", library.path, api.version)
        self._cndev = api

    def library_info(self) -> base.LibraryInfo:
        api = self._api()
        return base.LibraryInfo(library=api.calls.library.path, api=f"cndev handle API v{api.version}",
                                path="cndev", reason="the library exports cndevGetDeviceHandleByIndex and accepts "
                                                     f"struct version {api.version}")

    def close(self) -> None:
        api, self._cndev = self._cndev, None
        if api is None:
            return
        try:
            api.release()
        except errors.DeviceQueryError as err:
            logger.warning("cambricon: %s", err)
        api.calls.close()

    def driver_version(self) -> str | None:
        try:
            return self._api().driver_version()
        except errors.DeviceQueryError as err:
            logger.info("cambricon: no driver version: %s", err)
            return None

    def devices(self) -> Sequence[base.Device]:
        api = self._api()
        return self._listing.collect(lambda: self._indexes(api), lambda index: self._describe(api, index),
                                     failed="cannot count MLUs", gone="CNDev no longer lists this MLU")

    def preferred_allocation(self, available: Sequence[base.Device], must_include: Sequence[base.Device],
                             size: int) -> list[str]:
        """Grows the set one MLU at a time, taking the one with the most MLU-Links into it (then the same
        NUMA node, then the lowest index), as topology-aware allocation in Cambricon's plugin prefers
        linked MLUs."""
        chosen = [device.id for device in must_include]
        with self._lock:
            links = dict(self._links)
        numa = {device.id: device.numa_node for device in available}
        index = {device.id: device.index for device in available}
        candidates = [device.id for device in available if device.id not in chosen]

        def score(candidate: str) -> tuple[int, int, int]:
            linked = sum(links.get(candidate, []).count(member) for member in chosen)
            same_numa = sum(1 for member in chosen if numa.get(member) is not None
                            and numa.get(member) == numa.get(candidate))
            return (-linked, -same_numa, index.get(candidate, 0))

        while len(chosen) < size and candidates:
            best = min(candidates, key=score)
            chosen.append(best)
            candidates.remove(best)
        return chosen

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        nodes = [node for device in devices for node in device.device_nodes]
        nodes += _locate.present_nodes(self._options.dev_root, SHARED_DEVICES)
        return base.ContainerAllocation(
            envs={VISIBLE_DEVICES_ENV: ",".join(str(device.index) for device in devices)},
            device_nodes=tuple(nodes),
        )

    def sample(self, device: base.Device) -> base.DeviceSample:
        api, index = self._api(), self._listing.address_of(device)
        get = self._optional.get
        total, used = get(lambda: api.memory_mb(index), key=device.id, what="memory") or (None, None)
        return base.DeviceSample(
            utilization_percent=_as_float(get(lambda: api.utilization(index), key=device.id, what="utilization")),
            memory_used_mb=_as_float(used), memory_total_mb=_as_float(total),
            temperature_celsius=_as_float(get(lambda: api.chip_temperature(index), key=device.id,
                                              what="temperature")),
            power_watts=_as_float(get(lambda: api.power_watts(index), key=device.id, what="power")),
        )

    # -- internals -------------------------------------------------------------------------------

    def _api(self) -> cndev.Cndev:
        if self._cndev is None:
            raise errors.BackendUnavailable("cambricon backend is not open")
        return self._cndev

    def _describe(self, api: cndev.Cndev, index: int) -> base.Device | None:
        """The MLU at ``index``; its last known identity, Unhealthy, when an identity query fails.

        Bus ID, minor number, NUMA node, memory and links are optional: a failing one reads as absent.
        """
        try:
            api.handle(index)
            uuid = api.uuid(index)
            model = api.model(index)
        except errors.DeviceQueryError as err:
            known = self._book.failed(index, str(err))
            if known is None:
                self._log.report(index, str(err), logging.WARNING, "cambricon: skipping MLU %d until it answers: %s",
                                 index, err)
            else:
                self._log.report(index, str(err), logging.WARNING, "cambricon: %s is unhealthy: %s", known.id, err)
            return known
        get = self._optional.get
        memory = get(lambda: api.memory_mb(index), key=index, what="memory")
        known = self._book.last_known(index)
        total_mb = memory[0] if memory else (known.memory_total_mb if known else 0)
        bus_id = get(lambda: api.bus_id(index), key=index, what="PCI bus ID")
        minor = get(lambda: api.minor(index), key=index, what="minor number")
        numa = _sysfs.numa_node(self._options.sysfs_root, bus_id)
        if numa is None:
            numa = get(lambda: api.numa_node(index), key=index, what="NUMA node")
        peers = get(lambda: api.link_peers(index), key=index, what="MLU-Link peers") or []
        number = index if minor is None else minor
        device = base.Device(
            id=f"MLU-{uuid}", index=index, vendor="cambricon", model=model, memory_total_mb=int(total_mb),
            resource=self._options.resource_for(model, DEFAULT_RESOURCE), numa_node=numa, pci_bus_id=bus_id,
            uuid=uuid, device_nodes=_locate.present_nodes(
                self._options.dev_root, (pattern.format(n=number) for pattern in PER_DEVICE_FILES)),
        )
        with self._lock:
            self._links[device.id] = [f"MLU-{peer}" for peer in peers]
        problem = self._health_problem(api, index)
        device = self._book.record(index, device)
        return _devicebook.unhealthy(device, problem) if problem else device

    def _health_problem(self, api: cndev.Cndev, index: int) -> str:
        problems = []
        try:
            state = api.health(index)
        except errors.DeviceQueryError as err:
            problems.append(str(err))
        else:
            if state.health != cndev.HEALTHY:
                problems.append(f"cndev health {state.health} (device state "
                                f"{cndev.DEVICE_STATES.get(state.deviceState, state.deviceState)}, driver state "
                                f"{state.driverState})")
        mode = self._optional.get(lambda: api.compute_mode(index), key=index, what="compute mode")
        if mode == cndev.COMPUTE_MODE_PROHIBITED:
            problems.append("compute mode PROHIBITED (no context may use the MLU)")
        problem = "; ".join(problems)
        if problem:
            self._log.report(("health", index), problem, logging.WARNING, "cambricon: MLU %d is unhealthy: %s",
                             index, problem)
        else:
            self._log.clear(("health", index), logging.INFO, "cambricon: MLU %d is healthy again", index)
        return problem

    def _indexes(self, api: cndev.Cndev) -> range:
        """CNDev's device indexes; a count that differs from the MLUs sysfs shows is logged."""
        count = api.count()
        self._check_against_sysfs(count)
        return range(count)

    def _check_against_sysfs(self, listed: int) -> None:
        """Warns when sysfs shows more MLUs than CNDev lists (Cambricon's plugin compares the two)."""
        on_bus = _sysfs_mlu_count(self._options.sysfs_root)
        if on_bus is None or on_bus == listed:
            self._log.clear("count", logging.INFO, "cambricon: CNDev lists all %d MLUs sysfs shows", listed)
            return
        self._log.report("count", f"{on_bus}/{listed}", logging.WARNING,
                         "cambricon: sysfs shows %d MLUs (vendor 0xcabc, class 0x12, VFs skipped) but CNDev lists %d; "
                         "the others are not served", on_bus, listed)



def _sysfs_mlu_count(sysfs_root: str) -> int | None:
    """MLU physical functions on the PCI bus; None when sysfs shows no MLU at all (none, or not mounted)."""
    root = os.path.join(sysfs_root, "bus", "pci", "devices")
    try:
        entries = os.listdir(root)
    except OSError:
        return None
    count = 0
    for entry in entries:
        directory = os.path.join(root, entry)
        vendor = (_sysfs.read_attribute(os.path.join(directory, "vendor")) or "").lower()
        klass = (_sysfs.read_attribute(os.path.join(directory, "class")) or "").lower()
        if vendor == f"0x{VENDOR_ID:04x}" and klass.startswith("0x12") and not os.path.exists(
                os.path.join(directory, "physfn")):
            count += 1
    return count or None


def _as_float(value: float | None) -> float | None:
    return float(value) if value is not None else None

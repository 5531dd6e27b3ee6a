"""Huawei Ascend NPUs through DCMI.

Identity: each NPU is ``Ascend-<physical id>``. The physical ID is what Huawei's runtime reads in
``ASCEND_VISIBLE_DEVICES`` and what names the device file ``/dev/davinci<physical id>``; it stays the same
across restarts, unlike the logic ID. The v1 ``dcmi_*`` API is used where the library exports
``dcmi_init``, else the ``dcmiv2_*`` API (see dcmi.py).

Health, classified by fault level as Huawei's plugin does: health code 0 is healthy. Otherwise the
device's error codes decide: an NPU whose every fault code is NotHandle-level (``not_handled_fault_codes``,
Huawei's default list from faultCode.json) stays in service, as does a minor alarm (health 1) that
reports no code; any other code, or a major/critical alarm without codes, is Unhealthy with the codes
(hex) as the reason. -8012 (DCMI_ERR_CODE_NOT_READY) from any query means the card dropped.
The hub re-reads ``devices()`` on its interval, in both directions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field, field_validator

from krakenplug import errors
from krakenplug.backends import _devicebook, _locate, _sysfs, _vendorlib, base
from krakenplug.backends.ascend import dcmi
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

DEFAULT_RESOURCE = "krakenplug.pcl.ac.cn/ascend"
DEFAULT_LIBRARIES = (
    "/usr/local/Ascend/driver/lib64/driver/libdcmi.so",
    "/usr/local/Ascend/driver/lib64/common/libdcmi.so",
    "/usr/local/dcmi/libdcmi.so",
    "libdcmi.so",
)
SHARED_DEVICE_FILES = ("davinci_manager", "devmm_svm", "hisi_hdc")
VISIBLE_DEVICES_ENV = "ASCEND_VISIBLE_DEVICES"
# Huawei's default NotHandleFaultCodes (faultCode.json of the Ascend device plugin, as its docs print it):
# faults that leave the NPU in service.
NOT_HANDLED_FAULT_CODES = (
    "80E21007", "80E38003", "80F78006", "80C98006", "80CB8006", "81318006", "80A18006", "80A18005", "80FB8000",
    "8C1F8609", "80CD8006", "80CD8003", "80A38006", "80A38003", "80A58006", "80A58003", "80DE1805", "80F18006",
    "80F18003", "80DF8006", "80E01805", "80E18400", "80E01809", "80E18401", "80E00209", "80F38006",
)
MINOR_ALARM = 1


class AscendOptions(base.BackendOptions):
    driver_mounts: list[str] = Field(
        default_factory=list,
        description="Host driver directories mounted read-only into containers, e.g. /usr/local/Ascend/driver.",
    )

    not_handled_fault_codes: list[str] = Field(
        default_factory=lambda: list(NOT_HANDLED_FAULT_CODES),
        description="Fault codes (hex) that leave an NPU in service (Huawei's NotHandle level).",
    )

    @field_validator("driver_mounts", "not_handled_fault_codes", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """``--backend-opt driver_mounts=/a,/b`` arrives as a string."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


class AscendBackend:
    """Thread-safe; every DCMI call goes through one bounded choke point (``dcmi.Dcmi``)."""

    name: ClassVar[str] = "ascend"
    Options: ClassVar[type[AscendOptions]] = AscendOptions

    def __init__(self, options: AscendOptions, *, node_name: str = "") -> None:
        self._options = options
        self._book = _devicebook.DeviceBook()
        self._optional = _vendorlib.OptionalQueries("ascend")
        self._log = TransitionLog(logger)
        self._not_handled = frozenset(int(code, 16) for code in options.not_handled_fault_codes)
        self._dcmi: dcmi.Dcmi | None = None
        self._listing = _locate.Listing[dcmi.Address](self._book, vendor="ascend", kind="NPU", relist=self.devices,
                                                      log=logger)
        self._chips: dict[dcmi.Address, str] = {}  # chip name per NPU: it picks the memory query
        self._lock = threading.Lock()

    def open(self) -> None:
        library = _vendorlib.NativeLibrary.load(
            _vendorlib.candidates(self._options.library_path, DEFAULT_LIBRARIES), vendor="Ascend DCMI")
        calls = _vendorlib.VendorCalls(library, dcmi.SIGNATURES, vendor="ascend", book=self._book,
                                       timeout_seconds=self._options.call_timeout_seconds,
                                       code_names=dcmi.CODE_NAMES, unsupported_codes=dcmi.UNSUPPORTED_CODES,
                                       describe_key=dcmi.describe)
        api = dcmi.Dcmi(calls)
        try:
            api.init()
        except errors.DeviceQueryError as err:
            calls.close()
            raise errors.BackendUnavailable(f"{api.api} init in {library.path} failed: {err}; is the Ascend "
                                            "driver installed and /dev/davinci_manager present?") from err
        logger.info("ascend: DCMI loaded from %s, %s", library.path, self._why(api))
        self._dcmi = api

    @staticmethod
    def _why(api: dcmi.Dcmi) -> str:
        return ("v1 API (dcmi_*): the library exports dcmi_init" if api.api == dcmi.API_V1
                else "v2 API (dcmiv2_*, addressed by dev_id): the library does not export dcmi_init")

    def library_info(self) -> base.LibraryInfo:
        api = self._api()
        return base.LibraryInfo(library=api.calls.library.path, api=api.api, path="dcmi", reason=self._why(api))

    def close(self) -> None:
        api, self._dcmi = self._dcmi, None
        if api is not None:
            api.calls.close()  # DCMI has no shutdown call; dropping the worker is all there is

    def driver_version(self) -> str | None:
        try:
            return self._api().driver_version()
        except errors.DeviceQueryError as err:
            logger.info("ascend: no driver version: %s", err)
            return None

    def devices(self) -> Sequence[base.Device]:
        api = self._api()
        return self._listing.collect(api.addresses, lambda address: self._describe(api, address),
                                     failed="cannot list NPUs", gone="DCMI no longer lists this NPU")

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        nodes = [node for device in devices for node in device.device_nodes]
        nodes += _locate.present_nodes(self._options.dev_root, SHARED_DEVICE_FILES)
        mounts = tuple(base.Mount(path, path, read_only=True) for path in self._options.driver_mounts)
        return base.ContainerAllocation(
            envs={VISIBLE_DEVICES_ENV: ",".join(str(device.index) for device in devices)},
            device_nodes=tuple(nodes), mounts=mounts,
        )

    def sample(self, device: base.Device) -> base.DeviceSample:
        api, address = self._api(), self._listing.address_of(device)
        get = self._optional.get
        with self._lock:
            chip = self._chips.get(address, "")
        total, used = get(lambda: api.memory_mb(address, chip), key=device.id, what="memory") or (None, None)
        utilization = get(lambda: api.ai_core_utilization(address), key=device.id, what="AI Core utilization")
        temperature = get(lambda: api.temperature(address), key=device.id, what="temperature")
        return base.DeviceSample(
            utilization_percent=_as_float(utilization), memory_used_mb=_as_float(used),
            memory_total_mb=_as_float(total), temperature_celsius=_as_float(temperature),
            power_watts=get(lambda: api.power_watts(address), key=device.id, what="power"),
        )

    # -- internals -------------------------------------------------------------------------------

    def _api(self) -> dcmi.Dcmi:
        if self._dcmi is None:
            raise errors.BackendUnavailable("ascend backend is not open")
        return self._dcmi

    def _describe(self, api: dcmi.Dcmi, address: dcmi.Address) -> base.Device | None:
        """The NPU at ``address``; its last known identity, Unhealthy, when an identity query fails.

        Memory and bus ID are optional: a failing one reads as absent and the NPU keeps being served.
        """
        where = dcmi.describe(address)
        try:
            physical = api.physical_id(address)
            chip_type, chip_name = api.chip(address)
        except errors.DeviceQueryError as err:
            reason = f"card dropped: {err}" if dcmi.is_dropped(err) else str(err)
            known = self._book.failed(address, reason)
            if known is None:
                self._log.report(address, reason, logging.WARNING, "ascend: skipping the NPU at %s until it "
                                 "answers: %s", where, reason)
            else:
                self._log.report(address, reason, logging.WARNING, "ascend: %s is unhealthy: %s", known.id, reason)
            return known
        model = f"{chip_type}{chip_name}" or "Ascend"
        with self._lock:
            self._chips[address] = chip_name
        memory = self._optional.get(lambda: api.memory_mb(address, chip_name), key=where, what="memory")
        known = self._book.last_known(address)
        total_mb = memory[0] if memory else (known.memory_total_mb if known else 0)
        bus_id = self._optional.get(lambda: api.bus_id(address), key=where, what="PCI bus ID")
        device = base.Device(
            id=f"Ascend-{physical}", index=physical, vendor="ascend", model=model, memory_total_mb=int(total_mb),
            resource=self._options.resource_for(model, DEFAULT_RESOURCE),
            numa_node=_sysfs.numa_node(self._options.sysfs_root, bus_id), pci_bus_id=bus_id,
            device_nodes=_locate.present_nodes(self._options.dev_root, [f"davinci{physical}"]),
        )
        reason = self._health_problem(api, address)
        device = self._book.record(address, device)
        return _devicebook.unhealthy(device, reason) if reason else device

    def _health_problem(self, api: dcmi.Dcmi, address: dcmi.Address) -> str:
        """"" when the NPU may serve, else the reason (health code and error codes in hex)."""
        where = dcmi.describe(address)
        try:
            code = api.health(address)
        except errors.DeviceQueryError as err:
            problem = f"card dropped: {err}" if dcmi.is_dropped(err) else str(err)
        else:
            problem = self._classify(api, address, code) if code else ""
        if problem:
            self._log.report(("health", address), problem, logging.WARNING, "ascend: NPU at %s is unhealthy: %s",
                             where, problem)
        else:
            self._log.clear(("health", address), logging.INFO, "ascend: NPU at %s is healthy again", where)
        return problem

    def _classify(self, api: dcmi.Dcmi, address: dcmi.Address, code: int) -> str:
        """The reason an NPU with health ``code`` must leave service, or "" when its faults do not need it."""
        try:
            found = api.error_codes(address)
        except errors.DeviceQueryError as err:
            logger.info("ascend: no error codes for %s: %s", dcmi.describe(address), err)
            found = []
        codes = ", ".join(f"0x{value:08X}" for value in found)
        alarm = f"dcmi health {code}" + (f"; error codes {codes}" if codes else "")
        handled = [value for value in found if value not in self._not_handled]
        if handled or (not found and code > MINOR_ALARM):
            return alarm
        self._log.report(("minor", address), alarm, logging.INFO, "ascend: NPU at %s stays in service: %s "
                         "(minor or NotHandle-level faults only)", dcmi.describe(address), alarm)
        return ""



def _as_float(value: float | None) -> float | None:
    return float(value) if value is not None else None

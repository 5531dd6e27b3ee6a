"""ctypes bindings for Cambricon's CNDev (``libcndev.so``): structs, signatures, status names, typed queries.

Supported: the handle API generation (``cndevGetDeviceHandleByIndex``, struct version CNDEV_VERSION_6,
as in Cambricon's mlu-exporter cndev.h v2.x and what Cambricon's device plugin passes). The 2022 library
(highest struct version 5) addresses devices by ``int devId`` and lacks the handle, memory-V2, PCIe-V2,
power and minor-number calls: ``check_generation`` refuses it with a clear error instead of serving
nothing. Most CNDev structs start with an API ``version`` the caller fills in; the "V2" structs carry
none. Devices are addressed by the handle; the index is the key the choke point uses to mark a stuck
device.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, byref, c_char_p, c_int, c_int64, c_ubyte, c_uint, c_uint16, c_uint64
from typing import Any

from krakenplug import errors
from krakenplug.backends import _vendorlib

API_VERSION = 6  # CNDEV_VERSION_6
UNSUPPORTED_API_VERSION = 3
# What the handle generation exports and the 2022 generation lacks.
HANDLE_API = ("cndevGetDeviceHandleByIndex", "cndevGetMemoryUsageV2", "cndevGetPCIeInfoV2")
COMPUTE_MODES = {0: "DEFAULT", 1: "EXCLUSIVE", 2: "PROHIBITED"}
COMPUTE_MODE_PROHIBITED = 2
HEALTHY = 1  # cndevCardHealthState_t.health: 1 healthy, 0 not (what Cambricon's own plugin checks)

CODE_NAMES = {
    1: "CNDEV_ERROR_NO_DRIVER", 2: "CNDEV_ERROR_LOW_DRIVER_VERSION", 3: "CNDEV_ERROR_UNSUPPORTED_API_VERSION",
    4: "CNDEV_ERROR_UNINITIALIZED", 5: "CNDEV_ERROR_INVALID_ARGUMENT", 6: "CNDEV_ERROR_INVALID_DEVICE_ID",
    7: "CNDEV_ERROR_UNKNOWN", 8: "CNDEV_ERROR_MALLOC", 9: "CNDEV_ERROR_INSUFFICIENT_SPACE",
    10: "CNDEV_ERROR_NOT_SUPPORTED", 11: "CNDEV_ERROR_INVALID_LINK", 12: "CNDEV_ERROR_NO_DEVICES",
    13: "CNDEV_ERROR_NO_PERMISSION", 14: "CNDEV_ERROR_NOT_FOUND", 15: "CNDEV_ERROR_IN_USE",
    16: "CNDEV_ERROR_DUPLICATE", 17: "CNDEV_ERROR_TIMEOUT", 18: "CNDEV_ERROR_IN_PROBLEM",
}
UNSUPPORTED_CODES = (10,)
DEVICE_STATES = {0: "IN_PROBLEM", 1: "GOOD"}


class CardInfo(ctypes.Structure):
    _fields_ = [("version", c_int), ("number", c_uint)]


class Uuid(ctypes.Structure):
    _fields_ = [("version", c_int), ("uuid", c_ubyte * 37), ("ncsUUID64", c_uint64)]


class MemoryInfoV2(ctypes.Structure):
    _fields_ = [("physicalMemoryTotal", c_int64), ("physicalMemoryUsed", c_int64), ("reservedMemory", c_int64),
                ("virtualMemoryTotal", c_int64), ("virtualMemoryUsed", c_int64), ("globalMemory", c_uint64),
                ("reserved", c_uint64 * 16)]


class UtilizationInfo(ctypes.Structure):
    _fields_ = [("version", c_int), ("averageCoreUtilization", c_int), ("coreUtilization", c_int * 80)]


class CardHealthState(ctypes.Structure):
    _fields_ = [("version", c_int), ("health", c_int), ("deviceState", c_int), ("driverState", c_int)]


class PcieInfoV2(ctypes.Structure):
    _fields_ = [("subsystemId", c_uint), ("deviceId", c_uint), ("vendor", c_uint16), ("subsystemVendor", c_uint16),
                ("domain", c_uint), ("bus", c_uint), ("device", c_uint), ("function", c_uint),
                ("moduleId", c_uint16), ("slotId", c_uint16), ("reserved", c_uint * 8)]


class NumaNodeId(ctypes.Structure):
    _fields_ = [("version", c_int), ("nodeId", c_int)]


class DevicePowerInfo(ctypes.Structure):
    _fields_ = [("usage", c_int), ("cap", c_int), ("machine", c_int), ("tdp", c_int), ("maxPower", c_int),
                ("reserved", c_int * 16)]


class TemperatureInfo(ctypes.Structure):
    # The struct has grown at its end over CNDev releases; the spare tail keeps a newer library that
    # writes more fields from writing past our buffer.
    _fields_ = [("version", c_int), ("board", c_int), ("cluster", c_int * 20), ("memoryDie", c_int * 8),
                ("chip", c_int), ("airInlet", c_int), ("airOutlet", c_int), ("memory", c_int),
                ("videoInput", c_int), ("cpu", c_int), ("isp", c_int), ("spare", c_int * 32)]


class ComputeMode(ctypes.Structure):
    _fields_ = [("version", c_int), ("mode", c_int), ("spare", c_int * 8)]


class MluLinkRemoteInfo(ctypes.Structure):
    # Fields up to ncsUUID64 as in cndev.h; the MAC address and port name that newer headers append
    # (lengths not pinned down here) fall into the spare tail.
    _fields_ = [("version", c_int), ("mcSn", c_uint64), ("baSn", c_uint64), ("slotId", c_uint), ("portId", c_uint),
                ("devIp", c_ubyte * 16), ("uuid", c_ubyte * 37), ("devIpVersion", c_uint), ("isIpValid", c_uint),
                ("connectType", c_int), ("ncsUUID64", c_uint64), ("spare", c_ubyte * 256)]


class VersionInfo(ctypes.Structure):
    _fields_ = [("version", c_int), ("mcuMajorVersion", c_uint), ("mcuMinorVersion", c_uint),
                ("mcuBuildVersion", c_uint), ("driverMajorVersion", c_uint), ("driverMinorVersion", c_uint),
                ("driverBuildVersion", c_uint)]


def _out(struct: type[ctypes.Structure]) -> list[Any]:
    return [POINTER(struct), c_int]  # (struct *out, cndevDevice_t device)


SIGNATURES: dict[str, _vendorlib.Signature] = {
    "cndevInit": (c_int, [c_int]),
    "cndevRelease": (c_int, []),
    "cndevGetDeviceCount": (c_int, [POINTER(CardInfo)]),
    "cndevGetDeviceHandleByIndex": (c_int, [c_int, POINTER(c_int)]),
    "cndevGetCardNameStringByDevId": (c_char_p, [c_int]),
    "cndevGetUUID": (c_int, _out(Uuid)),
    "cndevGetMemoryUsageV2": (c_int, _out(MemoryInfoV2)),
    "cndevGetDeviceUtilizationInfo": (c_int, _out(UtilizationInfo)),
    "cndevGetCardHealthState": (c_int, _out(CardHealthState)),
    "cndevGetPCIeInfoV2": (c_int, _out(PcieInfoV2)),
    "cndevGetNUMANodeIdByDevId": (c_int, _out(NumaNodeId)),
    "cndevGetTemperatureInfo": (c_int, _out(TemperatureInfo)),
    "cndevGetDevicePowerInfo": (c_int, _out(DevicePowerInfo)),
    "cndevDeviceGetMinorNumber": (c_int, [POINTER(c_uint), c_int]),
    "cndevGetVersionInfo": (c_int, _out(VersionInfo)),
    "cndevGetComputeMode": (c_int, _out(ComputeMode)),
    "cndevGetMLULinkPortNumber": (c_int, [c_int]),
    "cndevGetMLULinkRemoteInfo": (c_int, _out(MluLinkRemoteInfo) + [c_int]),
}


class UnsupportedGeneration(errors.BackendUnavailable):
    """The library is an API generation this backend does not serve."""


class Cndev:
    """Typed CNDev queries over the VendorCalls choke point; every method raises DeviceQueryError subclasses."""

    def __init__(self, calls: _vendorlib.VendorCalls) -> None:
        self.calls = calls
        self.version = API_VERSION
        self._handles: dict[int, int] = {}

    def init(self) -> None:
        self.calls.status("cndevInit", 0)

    def release(self) -> None:
        self.calls.status("cndevRelease")

    def check_generation(self) -> None:
        """Refuses the 2022 (devId) generation: it lacks the handle calls and struct version 6."""
        missing = [name for name in HANDLE_API if not self.calls.supports(name)]
        problem = f"it does not export {', '.join(missing)}" if missing else ""
        if not problem:
            try:
                self._count(API_VERSION)
            except _vendorlib.VendorCallError as err:
                if err.code != UNSUPPORTED_API_VERSION:
                    raise
                problem = "it rejects struct version CNDEV_VERSION_6"
        if problem:
            raise UnsupportedGeneration(
                f"{self.calls.library.path} is an older CNDev generation ({problem}): the 2022 library (struct "
                f"version 5, calls by int devId) is not supported; install a Cambricon driver/Neuware whose "
                f"libcndev.so has the handle API (cndevGetDeviceHandleByIndex, CNDEV_VERSION_6)")

    def count(self) -> int:
        """The number of MLUs."""
        return self._count(self.version)

    def _count(self, version: int) -> int:
        info = CardInfo(version=version)
        self.calls.status("cndevGetDeviceCount", byref(info))
        return int(info.number)

    def handle(self, index: int) -> int:
        handle = c_int(0)
        self.calls.status("cndevGetDeviceHandleByIndex", index, byref(handle), key=index)
        self._handles[index] = handle.value
        return handle.value

    def model(self, index: int) -> str:
        name = self.calls.value("cndevGetCardNameStringByDevId", self._handle(index), key=index)
        if not name:  # this function signals failure with NULL, not a status code
            raise _vendorlib.VendorCallError("cndevGetCardNameStringByDevId", None, "returned no name")
        return str(name.decode(errors="replace")).strip()

    def uuid(self, index: int) -> str:
        info = self._query("cndevGetUUID", Uuid, index)
        return bytes(info.uuid).split(b"\0", 1)[0].decode(errors="replace").strip()

    def memory_mb(self, index: int) -> tuple[int, int]:
        """(total, used) physical memory in MB."""
        info = self._query("cndevGetMemoryUsageV2", MemoryInfoV2, index, versioned=False)
        return info.physicalMemoryTotal, info.physicalMemoryUsed

    def utilization(self, index: int) -> int:
        return int(self._query("cndevGetDeviceUtilizationInfo", UtilizationInfo, index).averageCoreUtilization)

    def health(self, index: int) -> CardHealthState:
        state: CardHealthState = self._query("cndevGetCardHealthState", CardHealthState, index)
        return state

    def bus_id(self, index: int) -> str:
        pcie = self._query("cndevGetPCIeInfoV2", PcieInfoV2, index, versioned=False)
        return f"{pcie.domain:04x}:{pcie.bus:02x}:{pcie.device:02x}.{pcie.function}"

    def numa_node(self, index: int) -> int | None:
        node = self._query("cndevGetNUMANodeIdByDevId", NumaNodeId, index).nodeId
        return node if node >= 0 else None

    def chip_temperature(self, index: int) -> int:
        return int(self._query("cndevGetTemperatureInfo", TemperatureInfo, index).chip)

    def power_watts(self, index: int) -> int:
        return int(self._query("cndevGetDevicePowerInfo", DevicePowerInfo, index, versioned=False).usage)

    def minor(self, index: int) -> int:
        minor = c_uint(0)
        self.calls.status("cndevDeviceGetMinorNumber", byref(minor), self._handle(index), key=index)
        return minor.value

    def compute_mode(self, index: int) -> int:
        return int(self._query("cndevGetComputeMode", ComputeMode, index).mode)

    def link_peers(self, index: int) -> list[str]:
        """UUIDs of the MLUs this one reaches over MLU-Link, one entry per connected port."""
        ports = int(self.calls.value("cndevGetMLULinkPortNumber", self._handle(index), key=index))
        peers = []
        for port in range(max(0, ports)):
            info = MluLinkRemoteInfo(version=self.version)
            try:
                self.calls.status("cndevGetMLULinkRemoteInfo", byref(info), self._handle(index), port, key=index)
            except _vendorlib.VendorCallError:
                continue  # a port without a link (INVALID_LINK) or not reporting one
            uuid = bytes(info.uuid).split(b"\0", 1)[0].decode(errors="replace").strip()
            if uuid:
                peers.append(uuid)
        return peers

    def driver_version(self) -> str:
        info = VersionInfo(version=self.version)
        self.calls.status("cndevGetVersionInfo", byref(info), self._handle(0))
        return f"{info.driverMajorVersion}.{info.driverMinorVersion}.{info.driverBuildVersion}"

    def _handle(self, index: int) -> int:
        return self._handles[index] if index in self._handles else self.handle(index)

    def _query(self, name: str, struct: type[ctypes.Structure], index: int, *, versioned: bool = True) -> Any:
        info = struct(version=self.version) if versioned else struct()
        self.calls.status(name, byref(info), self._handle(index), key=index)
        return info

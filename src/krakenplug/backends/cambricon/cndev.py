"""ctypes bindings for Cambricon's CNDev (``libcndev.so``): structs, signatures, status names, typed queries.

Most CNDev structs start with an API ``version`` the caller fills in; ``open`` negotiates it once
(CNDEV_VERSION_6, else 5 when the library answers UNSUPPORTED_API_VERSION). The "V2" structs carry no
version. Devices are addressed by the handle from ``cndevGetDeviceHandleByIndex``; the index is the key
the choke point uses to mark a stuck device.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, byref, c_char_p, c_int, c_int64, c_ubyte, c_uint, c_uint16, c_uint64
from typing import Any

from krakenplug.backends import _vendorlib

API_VERSIONS = (6, 5)  # newest first
UNSUPPORTED_API_VERSION = 3
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


class VersionInfo(ctypes.Structure):
    _fields_ = [("version", c_int), ("mcuMajorVersion", c_uint), ("mcuMinorVersion", c_uint),
                ("mcuBuildVersion", c_uint), ("driverMajorVersion", c_uint), ("driverMinorVersion", c_uint),
                ("driverBuildVersion", c_uint)]


def _out(struct: type[ctypes.Structure]) -> list:
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
}


class Cndev:
    """Typed CNDev queries over the VendorCalls choke point; every method raises DeviceQueryError subclasses."""

    def __init__(self, calls: _vendorlib.VendorCalls) -> None:
        self.calls = calls
        self.version = API_VERSIONS[0]
        self._handles: dict[int, int] = {}

    def init(self) -> None:
        self.calls.status("cndevInit", 0)

    def release(self) -> None:
        self.calls.status("cndevRelease")

    def negotiate(self) -> None:
        """Settles the struct API version: the newest one the library accepts."""
        for version in API_VERSIONS[:-1]:
            try:
                self._count(version)
            except _vendorlib.VendorCallError as err:
                if err.code != UNSUPPORTED_API_VERSION:
                    raise
                continue
            self.version = version
            return
        self._count(API_VERSIONS[-1])
        self.version = API_VERSIONS[-1]

    def count(self) -> int:
        """The number of MLUs."""
        return self._count(self.version)

    def _count(self, version: int) -> int:
        info = CardInfo(version=version)
        self.calls.status("cndevGetDeviceCount", byref(info))
        return info.number

    def handle(self, index: int) -> int:
        handle = c_int(0)
        self.calls.status("cndevGetDeviceHandleByIndex", index, byref(handle), key=index)
        self._handles[index] = handle.value
        return handle.value

    def model(self, index: int) -> str:
        name = self.calls.value("cndevGetCardNameStringByDevId", self._handle(index), key=index)
        if not name:  # this function signals failure with NULL, not a status code
            raise _vendorlib.VendorCallError("cndevGetCardNameStringByDevId", None, "returned no name")
        return name.decode(errors="replace").strip()

    def uuid(self, index: int) -> str:
        info = self._query("cndevGetUUID", Uuid, index)
        return bytes(info.uuid).split(b"\0", 1)[0].decode(errors="replace").strip()

    def memory_mb(self, index: int) -> tuple[int, int]:
        """(total, used) physical memory in MB."""
        info = self._query("cndevGetMemoryUsageV2", MemoryInfoV2, index, versioned=False)
        return info.physicalMemoryTotal, info.physicalMemoryUsed

    def utilization(self, index: int) -> int:
        return self._query("cndevGetDeviceUtilizationInfo", UtilizationInfo, index).averageCoreUtilization

    def health(self, index: int) -> CardHealthState:
        return self._query("cndevGetCardHealthState", CardHealthState, index)

    def bus_id(self, index: int) -> str:
        pcie = self._query("cndevGetPCIeInfoV2", PcieInfoV2, index, versioned=False)
        return f"{pcie.domain:04x}:{pcie.bus:02x}:{pcie.device:02x}.{pcie.function}"

    def numa_node(self, index: int) -> int | None:
        node = self._query("cndevGetNUMANodeIdByDevId", NumaNodeId, index).nodeId
        return node if node >= 0 else None

    def chip_temperature(self, index: int) -> int:
        return self._query("cndevGetTemperatureInfo", TemperatureInfo, index).chip

    def power_watts(self, index: int) -> int:
        return self._query("cndevGetDevicePowerInfo", DevicePowerInfo, index, versioned=False).usage

    def minor(self, index: int) -> int:
        minor = c_uint(0)
        self.calls.status("cndevDeviceGetMinorNumber", byref(minor), self._handle(index), key=index)
        return minor.value

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

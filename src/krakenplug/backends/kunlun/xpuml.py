"""ctypes binding of Kunlunxin XPUML (``libxpuml.so``): structs, return codes and the one call path.

Layouts follow kunlunxin/go-xpuml's ``xpuml.h``; every struct is padded with ``reserved`` to 128 bytes.
Every call goes through the shared choke point (``_vendorlib.VendorCalls``): bounded by a timeout,
return codes mapped to their names, and a symbol the installed library lacks reported as NotSupported
(the 2022 library has no GetName or GetMinorNumber). Handles never leave this module's callers in the
kunlun package.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
from ctypes import POINTER, byref, c_char_p, c_int, c_uint, c_void_p
from typing import Any

from krakenplug.backends import _devicebook, _vendorlib

logger = logging.getLogger(__name__)

DEFAULT_LIBRARIES = (
    "libxpuml.so.1", "libxpuml.so",
    "/usr/local/xpu/lib64/libxpuml.so.1", "/usr/local/xpu/lib64/libxpuml.so",
)

# xpumlReturn_t: NVML's numbering for 0-24 (XPU_IS_LOST where NVML has GPU_IS_LOST), plus UNKNOWN.
RETURN_CODES = {
    0: "SUCCESS", 1: "UNINITIALIZED", 2: "INVALID_ARGUMENT", 3: "NOT_SUPPORTED", 4: "NO_PERMISSION",
    5: "ALREADY_INITIALIZED", 6: "NOT_FOUND", 7: "INSUFFICIENT_SIZE", 8: "INSUFFICIENT_POWER",
    9: "DRIVER_NOT_LOADED", 10: "TIMEOUT", 11: "IRQ_ISSUE", 12: "LIBRARY_NOT_FOUND", 13: "FUNCTION_NOT_FOUND",
    14: "CORRUPTED_INFOROM", 15: "XPU_IS_LOST", 16: "RESET_REQUIRED", 17: "OPERATING_SYSTEM",
    18: "LIB_RM_VERSION_MISMATCH", 19: "IN_USE", 20: "MEMORY", 21: "NO_DATA", 22: "VXPU_ECC_NOT_SUPPORTED",
    23: "INSUFFICIENT_RESOURCES", 24: "FREQ_NOT_SUPPORTED", 999: "UNKNOWN",
}
UNSUPPORTED_CODES = (3, 13)  # NOT_SUPPORTED, FUNCTION_NOT_FOUND

# xpumlHostVxpuMode_t
HOST_VXPU_MODES = {0: "NON_SRIOV", 1: "SRIOV_OFF", 2: "SRIOV_ON"}
SRIOV_ON = 2
# xpumlDeviceModel_t: from 200 on, groups of four per card model: <model>_SRIOV_PF, then its VFs
# VF_ONE_OF_ONE/TWO/THREE (R200 200-203, R300 204-207, R200_8F 208-211, ...).
SRIOV_MODEL_BASE = 200

# xpumlDeviceState_t
STATE_NAMES = {0: "UNUSED", 201: "RUNNING", 205: "IN_RESET", 207: "ERROR", 208: "IN_EXCEPTION"}
HEALTHY_STATES = frozenset({0, 201})

_BUFFER = 96  # generous for names, serials and versions


class PciInfo(ctypes.Structure):
    _fields_ = [("domain", ctypes.c_uint), ("bus", ctypes.c_uint), ("device", ctypes.c_uint),
                ("function", ctypes.c_uint), ("pciDeviceId", ctypes.c_uint), ("pciSubSystemId", ctypes.c_uint),
                ("busId", ctypes.c_char * 32), ("reserved", ctypes.c_ulonglong * 9)]


class Utilization(ctypes.Structure):
    _fields_ = [("xpu", ctypes.c_uint), ("memory", ctypes.c_uint), ("reserved", ctypes.c_ulonglong * 15)]


class Memory(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "pageSizeGlobalMemory", "totalGlobalMemory", "freeGlobalMemory", "usedGlobalMemory",
        "pageSizeL3Memory", "totalL3Memory", "freeL3Memory", "usedL3Memory")] + [("reserved", ctypes.c_ulonglong * 8)]


class Attributes(ctypes.Structure):
    _fields_ = [("archId", ctypes.c_int), ("boardId", ctypes.c_int), ("modelId", ctypes.c_int),
                ("clusterCount", ctypes.c_uint), ("sdnnCount", ctypes.c_uint), ("dmaEngineCount", ctypes.c_uint),
                ("decoderCount", ctypes.c_uint), ("encoderCount", ctypes.c_uint), ("imgProcCount", ctypes.c_uint),
                ("maxVFCount", ctypes.c_uint), ("globalMemorySizeMB", ctypes.c_ulonglong),
                ("l3MemorySizeMB", ctypes.c_ulonglong), ("sn", ctypes.c_ulonglong * 2),
                ("reserved", ctypes.c_ulonglong * 7)]


_DEV = c_void_p  # xpumlDevice_t, an opaque pointer
SIGNATURES: dict[str, _vendorlib.Signature] = {
    "xpumlInit": (c_int, []),
    "xpumlShutdown": (c_int, []),
    "xpumlSystemGetDriverVersion": (c_int, [c_char_p, c_uint]),
    "xpumlDeviceGetCount": (c_int, [POINTER(c_uint)]),
    "xpumlDeviceGetHandleByIndex": (c_int, [c_uint, POINTER(c_void_p)]),
    "xpumlDeviceGetSerial": (c_int, [_DEV, c_char_p, c_uint]),
    "xpumlDeviceGetName": (c_int, [_DEV, c_char_p, c_uint]),
    "xpumlDeviceGetMinorNumber": (c_int, [_DEV, POINTER(c_uint)]),
    "xpumlDeviceGetPciInfo": (c_int, [_DEV, POINTER(PciInfo)]),
    "xpumlDeviceGetMemoryInfo": (c_int, [_DEV, POINTER(Memory)]),
    "xpumlDeviceGetAttributes": (c_int, [_DEV, POINTER(Attributes)]),
    "xpumlDeviceGetUtilizationRates": (c_int, [_DEV, POINTER(Utilization)]),
    "xpumlDeviceGetTemperature": (c_int, [_DEV, c_int, POINTER(c_uint)]),
    "xpumlDeviceGetPowerUsage": (c_int, [_DEV, POINTER(c_uint)]),
    "xpumlDeviceGetState": (c_int, [_DEV, POINTER(c_int)]),
    "xpumlDeviceGetHostVxpuMode": (c_int, [_DEV, POINTER(c_int)]),
    "xpumlDeviceSetSriovVfNum": (c_int, [_DEV, c_int]),
}


def is_sriov_pf_model(model_id: int) -> bool:
    return model_id >= SRIOV_MODEL_BASE and (model_id - SRIOV_MODEL_BASE) % 4 == 0


def is_sriov_vf_model(model_id: int) -> bool:
    return model_id >= SRIOV_MODEL_BASE and (model_id - SRIOV_MODEL_BASE) % 4 != 0


@dataclasses.dataclass(frozen=True)
class Handle:
    index: int
    pointer: int


class Xpuml:
    """The loaded library; methods mirror the XPUML functions the backend uses."""

    def __init__(self, calls: _vendorlib.VendorCalls) -> None:
        self.calls = calls
        self.library = calls.library

    @classmethod
    def load(cls, library_path: str | None, *, timeout_seconds: float, book: _devicebook.DeviceBook) -> Xpuml:
        """Loads the library (configured path first, else the usual names); raises BackendUnavailable."""
        library = _vendorlib.NativeLibrary.load(_vendorlib.candidates(library_path, DEFAULT_LIBRARIES),
                                                vendor="Kunlunxin XPUML")
        return cls(_vendorlib.VendorCalls(library, SIGNATURES, vendor="kunlun", timeout_seconds=timeout_seconds,
                                          book=book, code_names=RETURN_CODES, unsupported_codes=UNSUPPORTED_CODES,
                                          describe_key=str))

    def _out(self, function: str, handle: Handle, ctype: Any, *extra: Any) -> Any:
        """Calls ``function(handle, *extra, &out)`` and returns ``out`` (a ``ctype`` instance)."""
        out = ctype()
        self.calls.status(function, handle.pointer, *extra, byref(out), key=handle.index)
        return out

    def _text(self, function: str, handle: Handle) -> str:
        buffer = ctypes.create_string_buffer(_BUFFER)
        self.calls.status(function, handle.pointer, buffer, _BUFFER, key=handle.index)
        return buffer.value.decode(errors="replace").strip()

    # -- system ----------------------------------------------------------------------------------

    def init(self) -> None:
        self.calls.status("xpumlInit")

    def shutdown(self) -> None:
        try:
            self.calls.status("xpumlShutdown")
        finally:
            self.release()

    def release(self) -> None:
        """Stops the call worker without calling into the library (after a failed init)."""
        self.calls.close()

    def driver_version(self) -> str:
        buffer = ctypes.create_string_buffer(_BUFFER)
        self.calls.status("xpumlSystemGetDriverVersion", buffer, _BUFFER)
        return buffer.value.decode(errors="replace").strip()

    def device_count(self) -> int:
        count = c_uint()
        self.calls.status("xpumlDeviceGetCount", byref(count))
        return count.value

    def handle(self, index: int) -> Handle:
        pointer = c_void_p()
        self.calls.status("xpumlDeviceGetHandleByIndex", index, byref(pointer), key=index)
        if not pointer.value:
            raise _vendorlib.VendorCallError("xpumlDeviceGetHandleByIndex", None, "returned no handle")
        return Handle(index, pointer.value)

    # -- one device ------------------------------------------------------------------------------

    def serial(self, handle: Handle) -> str:
        return self._text("xpumlDeviceGetSerial", handle)

    def name(self, handle: Handle) -> str:
        return self._text("xpumlDeviceGetName", handle)

    def minor_number(self, handle: Handle) -> int:
        return int(self._out("xpumlDeviceGetMinorNumber", handle, c_uint).value)

    def pci_bus_id(self, handle: Handle) -> str:
        return str(self._out("xpumlDeviceGetPciInfo", handle, PciInfo).busId.decode(errors="replace"))

    def memory(self, handle: Handle) -> Memory:
        return self._out("xpumlDeviceGetMemoryInfo", handle, Memory)  # type: ignore[no-any-return]

    def attributes(self, handle: Handle) -> Attributes:
        return self._out("xpumlDeviceGetAttributes", handle, Attributes)  # type: ignore[no-any-return]

    def utilization(self, handle: Handle) -> Utilization:
        return self._out("xpumlDeviceGetUtilizationRates", handle, Utilization)  # type: ignore[no-any-return]

    def temperature(self, handle: Handle) -> int:
        return int(self._out("xpumlDeviceGetTemperature", handle, c_uint, 0).value)

    def power_usage(self, handle: Handle) -> int:
        """The raw xpumlDeviceGetPowerUsage value; its unit is unverified (backend.POWER_UNIT_WATTS)."""
        return int(self._out("xpumlDeviceGetPowerUsage", handle, c_uint).value)

    def state(self, handle: Handle) -> int:
        return int(self._out("xpumlDeviceGetState", handle, c_int).value)

    def host_vxpu_mode(self, handle: Handle) -> int:
        return int(self._out("xpumlDeviceGetHostVxpuMode", handle, c_int).value)

    def set_sriov_vf_num(self, handle: Handle, count: int) -> None:
        self.calls.status("xpumlDeviceSetSriovVfNum", handle.pointer, count, key=handle.index)

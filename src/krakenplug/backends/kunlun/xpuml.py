"""ctypes binding of Kunlunxin XPUML (``libxpuml.so``): structs, return codes and the one call path.

Layouts follow kunlunxin/go-xpuml's ``xpuml.h``; every struct is padded with ``reserved`` to 128 bytes.
Every call goes through ``Xpuml._call``: bounded by a timeout, return codes mapped to their names, and
a symbol the installed library lacks reported as NotSupported (older libraries have no GetName or
GetMinorNumber). Handles never leave this module's callers in the kunlun package.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from krakenplug import errors
from krakenplug.backends import _calls, _devicebook, _native

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
    18: "LIB_RM_VERSION_MISMATCH", 19: "IN_USE", 20: "MEMORY", 21: "NO_DATA", 23: "INSUFFICIENT_RESOURCES",
    24: "FREQ_NOT_SUPPORTED", 999: "UNKNOWN",
}
NOT_SUPPORTED = 3
FUNCTION_NOT_FOUND = 13

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
    _fields_ = ([("archId", ctypes.c_int), ("boardId", ctypes.c_int), ("modelId", ctypes.c_int)]
                + [(name, ctypes.c_uint) for name in ("clusterCount", "sdnnCount", "dmaEngineCount", "decoderCount",
                                                      "encoderCount", "imgProcCount", "maxVFCount")]
                + [("globalMemorySizeMB", ctypes.c_ulonglong), ("l3MemorySizeMB", ctypes.c_ulonglong),
                   ("sn", ctypes.c_ulonglong * 2), ("reserved", ctypes.c_ulonglong * 7)])


class XpumlError(errors.DeviceQueryError):
    """An XPUML function returned an error code."""

    def __init__(self, function: str, code: int) -> None:
        self.function, self.code = function, code
        super().__init__(f"{function} returned {RETURN_CODES.get(code, 'code')} ({code})")


class NotSupported(XpumlError):
    """The library lacks the function, or says the device does not support it."""

    def __init__(self, function: str, code: int = NOT_SUPPORTED) -> None:
        super().__init__(function, code)


@dataclasses.dataclass(frozen=True)
class Handle:
    index: int
    pointer: int


class Xpuml:
    """The loaded library; methods mirror the XPUML functions the backend uses."""

    def __init__(self, library: _native.NativeLibrary, *, timeout_seconds: float,
                 book: _devicebook.DeviceBook) -> None:
        self.library = library
        self.book = book
        self._caller = _calls.BoundedCaller(timeout_seconds, name="xpuml-call")

    @classmethod
    def load(cls, library_path: str | None, *, timeout_seconds: float, book: _devicebook.DeviceBook) -> Xpuml:
        """Loads the library (configured path first, else the usual names); raises BackendUnavailable."""
        candidates = _native.candidates(library_path, DEFAULT_LIBRARIES)
        library = _native.NativeLibrary.load(candidates, vendor="Kunlunxin XPUML")
        return cls(library, timeout_seconds=timeout_seconds, book=book)

    def _call(self, function: str, argtypes: Sequence[Any], *args: Any, index: int | None = None) -> None:
        """The one path into the library; raises NotSupported, XpumlError or DeviceQueryError (timeout).

        A call about device ``index`` that times out marks that device Unhealthy (in the book) until the
        same call returns in time again.
        """
        fn = self.library.function(function, ctypes.c_int, argtypes)
        if fn is None:
            raise NotSupported(function, FUNCTION_NOT_FOUND)
        what = function if index is None else f"{function}({index})"
        try:
            code = self._caller(fn, *args, what=what)
        except errors.DeviceQueryError as err:  # BoundedCaller raises this only on a timeout
            logger.warning("%s", err)
            if index is not None:
                self.book.call_timed_out(index, function, str(err))
            raise
        if index is not None:
            self.book.call_returned(index, function)
        if code == NOT_SUPPORTED:
            raise NotSupported(function)
        if code != 0:
            logger.debug("%s returned %s (%d)", what, RETURN_CODES.get(code, "?"), code)
            raise XpumlError(function, code)

    def _device_call(self, function: str, handle: Handle, ctype: Any, *extra: Any) -> Any:
        """Calls ``function(handle, *extra, &out)`` and returns ``out`` (a ``ctype`` instance)."""
        out = ctype()
        argtypes = [ctypes.c_void_p] + [type(value) for value in extra] + [ctypes.POINTER(ctype)]
        self._call(function, argtypes, handle.pointer, *extra, ctypes.byref(out), index=handle.index)
        return out

    def _device_text(self, function: str, handle: Handle) -> str:
        buffer = ctypes.create_string_buffer(_BUFFER)
        self._call(function, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint], handle.pointer, buffer, _BUFFER,
                   index=handle.index)
        return buffer.value.decode(errors="replace").strip()

    # -- system ----------------------------------------------------------------------------------

    def init(self) -> None:
        self._call("xpumlInit", [])

    def shutdown(self) -> None:
        try:
            self._call("xpumlShutdown", [])
        finally:
            self.release()

    def release(self) -> None:
        """Stops the call worker without calling into the library (after a failed init)."""
        self._caller.close()

    def driver_version(self) -> str:
        buffer = ctypes.create_string_buffer(_BUFFER)
        self._call("xpumlSystemGetDriverVersion", [ctypes.c_char_p, ctypes.c_uint], buffer, _BUFFER)
        return buffer.value.decode(errors="replace").strip()

    def device_count(self) -> int:
        count = ctypes.c_uint()
        self._call("xpumlDeviceGetCount", [ctypes.POINTER(ctypes.c_uint)], ctypes.byref(count))
        return count.value

    def handle(self, index: int) -> Handle:
        pointer = ctypes.c_void_p()
        self._call("xpumlDeviceGetHandleByIndex", [ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)], index,
                   ctypes.byref(pointer), index=index)
        if not pointer.value:
            raise XpumlError("xpumlDeviceGetHandleByIndex", 999)
        return Handle(index, pointer.value)

    # -- one device ------------------------------------------------------------------------------

    def serial(self, handle: Handle) -> str:
        return self._device_text("xpumlDeviceGetSerial", handle)

    def name(self, handle: Handle) -> str:
        return self._device_text("xpumlDeviceGetName", handle)

    def minor_number(self, handle: Handle) -> int:
        return self._device_call("xpumlDeviceGetMinorNumber", handle, ctypes.c_uint).value

    def pci_bus_id(self, handle: Handle) -> str:
        return self._device_call("xpumlDeviceGetPciInfo", handle, PciInfo).busId.decode(errors="replace")

    def memory(self, handle: Handle) -> Memory:
        return self._device_call("xpumlDeviceGetMemoryInfo", handle, Memory)

    def attributes(self, handle: Handle) -> Attributes:
        return self._device_call("xpumlDeviceGetAttributes", handle, Attributes)

    def utilization(self, handle: Handle) -> Utilization:
        return self._device_call("xpumlDeviceGetUtilizationRates", handle, Utilization)

    def temperature(self, handle: Handle) -> int:
        return self._device_call("xpumlDeviceGetTemperature", handle, ctypes.c_uint, ctypes.c_int(0)).value

    def power_milliwatts(self, handle: Handle) -> int:
        return self._device_call("xpumlDeviceGetPowerUsage", handle, ctypes.c_uint).value

    def state(self, handle: Handle) -> int:
        return self._device_call("xpumlDeviceGetState", handle, ctypes.c_int).value

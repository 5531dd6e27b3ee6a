"""ctypes binding of StreamComputing STCML (``libstcml.so``, part of the HPE stack).

Signatures come from the vendor's STCML API page. ``stcDevice_t`` is opaque and handed around as a
pointer. The page spells the bus-ID lookup ``stcmlDevcieGetHandleByPciBusId`` in its definition and
``stcmlDeviceGetHandleByPciBusId`` in its heading, so both names are tried. Every call goes through the
shared choke point (``_vendorlib.VendorCalls``): bounded by a timeout, negative return codes mapped to
their names, and a symbol the library lacks reported as NotSupported. The page is titled "C++ API": a
library built without ``extern "C"`` exports mangled names, which these plain-name lookups do not find
(then ``stcmlInit`` is missing and the backend serves from sysfs and stc-smi, saying why).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Hashable
from ctypes import POINTER, byref, c_char_p, c_float, c_int, c_uint, c_void_p
from typing import Any

from krakenplug.backends import _devicebook, _vendorlib

logger = logging.getLogger(__name__)

DEFAULT_LIBRARIES = ("libstcml.so", "/usr/local/hpe/lib/libstcml.so")

RETURN_CODES = {
    0: "SUCCESS", -1: "IO", -2: "INVALID_PARAM", -3: "ACCESS", -4: "NO_DEVICE", -5: "NOT_FOUND", -6: "BUSY",
    -7: "TIMEOUT", -8: "OVERFLOW", -9: "PIPE", -10: "INTERRUPTED", -11: "NO_MEM", -12: "NOT_SUPPORTED",
    -13: "INVALID_FILE", -99: "OTHER",
}
UNSUPPORTED_CODES = (-12,)
BY_BUS_ID_NAMES = ("stcmlDeviceGetHandleByPciBusId", "stcmlDevcieGetHandleByPciBusId")
BOARD_ON = 0

_BUFFER = 96  # the API asks for at least 32


class TemperatureInfo(ctypes.Structure):
    """stcmlTemperatureInfo_t, degrees Celsius."""

    _fields_ = [(name, ctypes.c_float) for name in ("coreValue", "alertValue", "shutdownValue", "frontValue",
                                                    "backValue")]


_DEV = c_void_p  # stcDevice_t *, opaque
_TEXT = [_DEV, c_char_p, c_uint]
SIGNATURES: dict[str, _vendorlib.Signature] = {
    "stcmlInit": (c_int, []),
    "stcmlShutdown": (c_int, []),
    "stcmlSystemGetDriverVersion": (c_int, [c_char_p, c_uint]),
    "stcmlDeviceGetCount": (c_int, [POINTER(c_uint)]),
    "stcmlDeviceGetHandleByIndex": (c_int, [c_uint, POINTER(c_void_p)]),
    **{name: (c_int, [c_char_p, POINTER(c_void_p)]) for name in BY_BUS_ID_NAMES},
    "stcmlDeviceGetIndex": (c_int, [_DEV, POINTER(c_uint)]),
    "stcmlDeviceGetName": (c_int, _TEXT),
    "stcmlDeviceGetUuid": (c_int, _TEXT),
    "stcmlDeviceGetSerial": (c_int, _TEXT),
    "stcmlDeviceGetPower": (c_int, [_DEV, POINTER(c_float)]),
    "stcmlDeviceGetTemperatureInfo": (c_int, [_DEV, POINTER(TemperatureInfo)]),
    "stcmlDeviceGetBoardStatus": (c_int, [_DEV, POINTER(c_uint)]),
}


class Stcml:
    """The loaded library; ``key`` arguments name the device a call is about (for the device book)."""

    def __init__(self, calls: _vendorlib.VendorCalls) -> None:
        self.calls = calls
        self.library = calls.library

    @classmethod
    def load(cls, library_path: str | None, *, timeout_seconds: float, book: _devicebook.DeviceBook) -> Stcml:
        library = _vendorlib.NativeLibrary.load(_vendorlib.candidates(library_path, DEFAULT_LIBRARIES),
                                                vendor="StreamComputing STCML")
        return cls(_vendorlib.VendorCalls(library, SIGNATURES, vendor="streamcomputing",
                                          timeout_seconds=timeout_seconds, book=book, code_names=RETURN_CODES,
                                          unsupported_codes=UNSUPPORTED_CODES, describe_key=str))

    def _out(self, function: str, handle: int, ctype: Any, *, key: Hashable) -> Any:
        out = ctype()
        self.calls.status(function, handle, byref(out), key=key)
        return out

    def _text(self, function: str, handle: int | None = None, *, key: Hashable | None = None) -> str:
        buffer = ctypes.create_string_buffer(_BUFFER)
        if handle is None:
            self.calls.status(function, buffer, _BUFFER)
        else:
            self.calls.status(function, handle, buffer, _BUFFER, key=key)
        return buffer.value.decode(errors="replace").strip()

    # -- system ----------------------------------------------------------------------------------

    def init(self) -> None:
        self.calls.status("stcmlInit")

    def shutdown(self) -> None:
        try:
            self.calls.status("stcmlShutdown")
        finally:
            self.release()

    def release(self) -> None:
        """Stops the call worker without calling into the library (after a failed init)."""
        self.calls.close()

    def driver_version(self) -> str:
        return self._text("stcmlSystemGetDriverVersion")

    def device_count(self) -> int:
        count = c_uint()
        self.calls.status("stcmlDeviceGetCount", byref(count))
        return count.value

    def handle_by_index(self, index: int) -> int:
        pointer = c_void_p()
        self.calls.status("stcmlDeviceGetHandleByIndex", index, byref(pointer), key=index)
        return self._checked(pointer, "stcmlDeviceGetHandleByIndex")

    def supports_bus_id_lookup(self) -> bool:
        return any(self.calls.supports(name) for name in BY_BUS_ID_NAMES)

    def handle_by_bus_id(self, bus_id: str) -> int:
        """The handle of the NPU at ``bus_id`` (``dddd:bb:dd.f``), under whichever spelling is exported."""
        name = next((name for name in BY_BUS_ID_NAMES if self.calls.supports(name)), BY_BUS_ID_NAMES[0])
        pointer = c_void_p()
        self.calls.status(name, bus_id.encode(), byref(pointer), key=bus_id)
        return self._checked(pointer, name)

    @staticmethod
    def _checked(pointer: c_void_p, function: str) -> int:
        if not pointer.value:
            raise _vendorlib.VendorCallError(function, None, "returned no handle")
        return pointer.value

    # -- one device ------------------------------------------------------------------------------

    def index(self, handle: int, *, key: Hashable) -> int:
        return int(self._out("stcmlDeviceGetIndex", handle, c_uint, key=key).value)

    def name(self, handle: int, *, key: Hashable) -> str:
        return self._text("stcmlDeviceGetName", handle, key=key)

    def uuid(self, handle: int, *, key: Hashable) -> str:
        return self._text("stcmlDeviceGetUuid", handle, key=key)

    def serial(self, handle: int, *, key: Hashable) -> str:
        return self._text("stcmlDeviceGetSerial", handle, key=key)

    def power_watts(self, handle: int, *, key: Hashable) -> float:
        return float(self._out("stcmlDeviceGetPower", handle, c_float, key=key).value)

    def temperature(self, handle: int, *, key: Hashable) -> TemperatureInfo:
        return self._out("stcmlDeviceGetTemperatureInfo", handle, TemperatureInfo, key=key)  # type: ignore[no-any-return]

    def board_status(self, handle: int, *, key: Hashable) -> int:
        return int(self._out("stcmlDeviceGetBoardStatus", handle, c_uint, key=key).value)

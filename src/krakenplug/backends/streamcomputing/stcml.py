"""ctypes binding of StreamComputing STCML (``libstcml.so``, part of the HPE stack).

Signatures come from the vendor's STCML API page. ``stcDevice_t`` is opaque and handed around as a
pointer. The page spells the bus-ID lookup ``stcmlDevcieGetHandleByPciBusId`` in its definition and
``stcmlDeviceGetHandleByPciBusId`` in its heading, so both names are tried. Every call goes through
``Stcml._call``: bounded by a timeout, negative return codes mapped to their names, and a symbol the
library lacks reported as NotSupported.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Hashable, Sequence
from typing import Any

from krakenplug import errors
from krakenplug.backends import _calls, _devicebook, _native

logger = logging.getLogger(__name__)

DEFAULT_LIBRARIES = ("libstcml.so", "/usr/local/hpe/lib/libstcml.so")

RETURN_CODES = {
    0: "SUCCESS", -1: "IO", -2: "INVALID_PARAM", -3: "ACCESS", -4: "NO_DEVICE", -5: "NOT_FOUND", -6: "BUSY",
    -7: "TIMEOUT", -8: "OVERFLOW", -9: "PIPE", -10: "INTERRUPTED", -11: "NO_MEM", -12: "NOT_SUPPORTED",
    -13: "INVALID_FILE", -99: "OTHER",
}
NOT_SUPPORTED = -12
BY_BUS_ID_NAMES = ("stcmlDeviceGetHandleByPciBusId", "stcmlDevcieGetHandleByPciBusId")
BOARD_ON = 0

_BUFFER = 96  # the API asks for at least 32


class TemperatureInfo(ctypes.Structure):
    """stcmlTemperatureInfo_t, degrees Celsius."""

    _fields_ = [(name, ctypes.c_float) for name in ("coreValue", "alertValue", "shutdownValue", "frontValue",
                                                    "backValue")]


class StcmlError(errors.DeviceQueryError):
    def __init__(self, function: str, code: int) -> None:
        self.function, self.code = function, code
        super().__init__(f"{function} returned {RETURN_CODES.get(code, 'code')} ({code})")


class NotSupported(StcmlError):
    def __init__(self, function: str, code: int = NOT_SUPPORTED) -> None:
        super().__init__(function, code)

    def __str__(self) -> str:
        return f"{self.function} is not supported"


class Stcml:
    """The loaded library; ``key`` arguments name the device a call is about (for the device book)."""

    def __init__(self, library: _native.NativeLibrary, *, timeout_seconds: float,
                 book: _devicebook.DeviceBook) -> None:
        self.library = library
        self.book = book
        self._caller = _calls.BoundedCaller(timeout_seconds, name="stcml-call")

    @classmethod
    def load(cls, library_path: str | None, *, timeout_seconds: float, book: _devicebook.DeviceBook) -> Stcml:
        candidates = _native.candidates(library_path, DEFAULT_LIBRARIES)
        library = _native.NativeLibrary.load(candidates, vendor="StreamComputing STCML")
        return cls(library, timeout_seconds=timeout_seconds, book=book)

    def _call(self, function: str, argtypes: Sequence[Any], *args: Any, key: Hashable | None = None) -> None:
        """The one path into the library; raises NotSupported, StcmlError or DeviceQueryError (timeout)."""
        fn = self.library.function(function, ctypes.c_int, argtypes)
        if fn is None:
            raise NotSupported(function)
        what = function if key is None else f"{function}({key})"
        try:
            code = self._caller(fn, *args, what=what)
        except errors.DeviceQueryError as err:  # only on a timeout
            logger.warning("%s", err)
            if key is not None:
                self.book.call_timed_out(key, function, str(err))
            raise
        if key is not None:
            self.book.call_returned(key, function)
        if code == NOT_SUPPORTED:
            raise NotSupported(function)
        if code != 0:
            logger.debug("%s returned %s (%d)", what, RETURN_CODES.get(code, "?"), code)
            raise StcmlError(function, code)

    def _out(self, function: str, handle: int, ctype: Any, *, key: Hashable) -> Any:
        out = ctype()
        self._call(function, [ctypes.c_void_p, ctypes.POINTER(ctype)], handle, ctypes.byref(out), key=key)
        return out

    def _text(self, function: str, handle: int | None = None, *, key: Hashable | None = None) -> str:
        buffer = ctypes.create_string_buffer(_BUFFER)
        if handle is None:
            self._call(function, [ctypes.c_char_p, ctypes.c_uint], buffer, _BUFFER)
        else:
            self._call(function, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint], handle, buffer, _BUFFER, key=key)
        return buffer.value.decode(errors="replace").strip()

    # -- system ----------------------------------------------------------------------------------

    def init(self) -> None:
        self._call("stcmlInit", [])

    def shutdown(self) -> None:
        try:
            self._call("stcmlShutdown", [])
        finally:
            self.release()

    def release(self) -> None:
        """Stops the call worker without calling into the library (after a failed init)."""
        self._caller.close()

    def driver_version(self) -> str:
        return self._text("stcmlSystemGetDriverVersion")

    def device_count(self) -> int:
        count = ctypes.c_uint()
        self._call("stcmlDeviceGetCount", [ctypes.POINTER(ctypes.c_uint)], ctypes.byref(count))
        return count.value

    def handle_by_index(self, index: int) -> int:
        pointer = ctypes.c_void_p()
        self._call("stcmlDeviceGetHandleByIndex", [ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)], index,
                   ctypes.byref(pointer), key=index)
        return self._checked(pointer, "stcmlDeviceGetHandleByIndex")

    def supports_bus_id_lookup(self) -> bool:
        return any(self._function_exists(name) for name in BY_BUS_ID_NAMES)

    def handle_by_bus_id(self, bus_id: str) -> int:
        """The handle of the NPU at ``bus_id`` (``dddd:bb:dd.f``), under whichever spelling is exported."""
        name = next((name for name in BY_BUS_ID_NAMES if self._function_exists(name)), BY_BUS_ID_NAMES[0])
        pointer = ctypes.c_void_p()
        self._call(name, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)], bus_id.encode(), ctypes.byref(pointer),
                   key=bus_id)
        return self._checked(pointer, name)

    def _function_exists(self, name: str) -> bool:
        return self.library.function(name, ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]) is not None

    @staticmethod
    def _checked(pointer: ctypes.c_void_p, function: str) -> int:
        if not pointer.value:
            raise StcmlError(function, -99)
        return pointer.value

    # -- one device ------------------------------------------------------------------------------

    def index(self, handle: int, *, key: Hashable) -> int:
        return self._out("stcmlDeviceGetIndex", handle, ctypes.c_uint, key=key).value

    def name(self, handle: int, *, key: Hashable) -> str:
        return self._text("stcmlDeviceGetName", handle, key=key)

    def uuid(self, handle: int, *, key: Hashable) -> str:
        return self._text("stcmlDeviceGetUuid", handle, key=key)

    def serial(self, handle: int, *, key: Hashable) -> str:
        return self._text("stcmlDeviceGetSerial", handle, key=key)

    def power_watts(self, handle: int, *, key: Hashable) -> float:
        return self._out("stcmlDeviceGetPower", handle, ctypes.c_float, key=key).value

    def temperature(self, handle: int, *, key: Hashable) -> TemperatureInfo:
        return self._out("stcmlDeviceGetTemperatureInfo", handle, TemperatureInfo, key=key)

    def board_status(self, handle: int, *, key: Hashable) -> int:
        return self._out("stcmlDeviceGetBoardStatus", handle, ctypes.c_uint, key=key).value

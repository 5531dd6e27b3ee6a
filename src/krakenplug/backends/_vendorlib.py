"""The single choke point through which a ctypes backend calls its vendor library.

Every call is looked up by name (a symbol the library lacks is "not supported", like the vendors' Go
wrappers treat a failed dlsym), bounded by a timeout (a stuck call marks its device Unhealthy through
the DeviceBook), and its status code is mapped to the vendor's name for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import Any

from krakenplug import errors
from krakenplug.backends import _calls, _devicebook, _native

logger = logging.getLogger(__name__)

Signature = tuple[Any, Sequence[Any]]  # (restype, argtypes)


class VendorCallError(errors.DeviceQueryError):
    """A vendor function returned an error status."""

    def __init__(self, function: str, code: int | None, code_name: str) -> None:
        self.function, self.code, self.code_name = function, code, code_name
        shown = code_name if code is None or code_name == str(code) else f"{code_name} ({code})"
        super().__init__(f"{function} failed: {shown}")


class NotSupported(VendorCallError):
    """The library lacks the function, or says the device does not support it."""


class CallTimedOut(errors.DeviceQueryError):
    """A vendor function did not return within the call timeout."""


class VendorCalls:
    """Typed, bounded, named calls into one loaded vendor library."""

    def __init__(self, library: _native.NativeLibrary, signatures: Mapping[str, Signature], *, vendor: str,
                 timeout_seconds: float, book: _devicebook.DeviceBook, code_names: Mapping[int, str],
                 unsupported_codes: Collection[int] = (),
                 describe_key: Callable[[Hashable], str] = lambda key: f"device {key}") -> None:
        """``describe_key`` names a call's device in messages, e.g. "card 0 device 1"."""
        self.library = library
        self._signatures = signatures
        self._vendor = vendor
        self._book = book
        self._code_names = code_names
        self._unsupported = frozenset(unsupported_codes)
        self._describe_key = describe_key
        self._caller = _calls.BoundedCaller(timeout_seconds, name=f"{vendor}-call")

    def code_name(self, code: int) -> str:
        return self._code_names.get(code, str(code))

    def supports(self, name: str) -> bool:
        return self._function(name) is not None

    def status(self, name: str, *args: Any, key: Hashable | None = None) -> None:
        """Calls a function that returns a status code; anything but 0 raises VendorCallError."""
        code = self.value(name, *args, key=key)
        if code != 0:
            error = NotSupported if code in self._unsupported else VendorCallError
            raise error(name, code, self.code_name(code))

    def value(self, name: str, *args: Any, key: Hashable | None = None) -> Any:
        """Calls ``name`` and returns what it returns; ``key`` names the device the call is about."""
        fn = self._function(name)
        if fn is None:
            raise NotSupported(name, None, f"{self.library.path} does not export it")
        where = f"{name}({self._describe_key(key)})" if key is not None else name
        try:
            result = self._caller(fn, *args, what=where)
        except errors.DeviceQueryError as err:  # the caller raises this only on timeout
            logger.warning("%s: %s", self._vendor, err)
            if key is not None:
                self._book.call_timed_out(key, name, str(err))
            raise CallTimedOut(str(err)) from None
        if key is not None:
            self._book.call_returned(key, name)
        return result

    def close(self) -> None:
        self._caller.close()

    def _function(self, name: str) -> Any | None:
        restype, argtypes = self._signatures[name]
        return self.library.function(name, restype, argtypes)

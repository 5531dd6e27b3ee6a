"""Loading a vendor's C library with ctypes, shared by the ctypes backends.

Every symbol is looked up on its own: a symbol the installed library lacks is "not supported" (the
way the vendors' own Go wrappers treat a failed dlsym), never an import-time failure.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from typing import Any

from krakenplug import errors

logger = logging.getLogger(__name__)


class NativeLibrary:
    """A loaded shared library plus typed, cached symbol lookup."""

    def __init__(self, handle: ctypes.CDLL, path: str) -> None:
        self.handle = handle
        self.path = path
        self._functions: dict[str, Any] = {}
        self._missing_logged: set[str] = set()

    @classmethod
    def load(cls, candidates: Sequence[str], *, vendor: str) -> NativeLibrary:
        """Opens the first candidate that loads; raises BackendUnavailable listing what was tried."""
        problems = []
        for candidate in candidates:
            if os.sep in candidate and not os.path.exists(candidate):
                problems.append(f"{candidate}: no such file")
                continue
            try:
                return cls(ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL), candidate)
            except OSError as err:
                problems.append(f"{candidate}: {err}")
        raise errors.BackendUnavailable(f"cannot load the {vendor} library; tried " + "; ".join(problems))

    def function(self, name: str, restype: Any, argtypes: Sequence[Any]) -> Any | None:
        """The typed function ``name``, or None when the library does not export it."""
        if name in self._functions:
            return self._functions[name]
        try:
            fn = getattr(self.handle, name)
        except AttributeError:
            fn = None
            if name not in self._missing_logged:
                self._missing_logged.add(name)
                logger.info("%s does not export %s; treating it as not supported", self.path, name)
        else:
            fn.restype = restype
            fn.argtypes = list(argtypes)
        self._functions[name] = fn
        return fn


def candidates(configured: str | None, defaults: Sequence[str]) -> list[str]:
    """The configured library path first (when set), then the vendor's usual locations."""
    return [configured] if configured else list(defaults)

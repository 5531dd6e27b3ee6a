"""Loading NVML for pynvml, and the single choke point through which the NVIDIA backend calls it.

pynvml opens ``libnvidia-ml.so.1`` by bare name, once per process. To use a library at a chosen path
(``library_path``, or one found under ``driver_root``) we open that file first with RTLD_GLOBAL: glibc
then satisfies pynvml's bare-name open with the already loaded object, because its SONAME is
``libnvidia-ml.so.1`` (true of NVIDIA's driver libraries and of the test fakes). A process therefore
uses the first NVML it loads for its whole life.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any

import pynvml

from krakenplug.backends import _devicebook, _vendorlib


LIBRARY_NAME = "libnvidia-ml.so.1"
# Where distributions and the NVIDIA driver installer put the library, relative to the driver root.
LIBRARY_DIRS = ("usr/lib64", "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib64",
                "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "usr/lib", "lib")
CODE_NAMES = {getattr(pynvml, name): name for name in dir(pynvml) if name.startswith("NVML_ERROR_")}
# Codes meaning "NVML does not offer this to us": the GPU or driver lacks it, or (NO_PERMISSION) this process
# may not ask, as for memory info of MIG devices in some setups. An optional query then reads as absent.
UNSUPPORTED_CODES = (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                     pynvml.NVML_ERROR_NO_PERMISSION)
TIMEOUT_CODE = pynvml.NVML_ERROR_TIMEOUT


def preload(library_path: str | None, driver_root: str) -> str:
    """Makes the chosen NVML the one pynvml will use; returns a description for logs."""
    if library_path:
        candidates = [library_path]
    elif os.path.abspath(driver_root) != "/":
        candidates = [os.path.join(driver_root, directory, LIBRARY_NAME) for directory in LIBRARY_DIRS]
    else:
        return f"{LIBRARY_NAME} from the dynamic loader's search path"
    return _vendorlib.NativeLibrary.load(candidates, vendor="NVIDIA NVML").path


class Nvml:
    """Bounded, named pynvml calls. Event waits run on their own worker so they never delay queries."""

    def __init__(self, *, timeout_seconds: float, book: _devicebook.DeviceBook) -> None:
        self._queries = _vendorlib.BoundedCalls(vendor="nvidia", timeout_seconds=timeout_seconds, book=book,
                                                worker_name="nvidia-call")
        self._events = _vendorlib.BoundedCalls(vendor="nvidia", timeout_seconds=timeout_seconds, book=book,
                                               worker_name="nvidia-events")

    def call(self, name: str, *args: Any, key: Hashable | None = None) -> Any:
        """``pynvml.<name>(*args)``; raises NotSupported, VendorCallError or CallTimedOut."""
        return self._run(self._queries, name, args, key=key, timeout=None)

    def wait_event(self, event_set: Any, wait_ms: int) -> Any | None:
        """The next event, or None when none arrived within ``wait_ms``."""
        limit = self._queries.timeout_seconds + wait_ms / 1000
        try:
            return self._run(self._events, "nvmlEventSetWait_v2", (event_set, wait_ms), key=None, timeout=limit)
        except _vendorlib.VendorCallError as err:
            if err.code == TIMEOUT_CODE:
                return None
            raise

    def close(self) -> None:
        self._queries.close()
        self._events.close()

    @staticmethod
    def _run(calls: _vendorlib.BoundedCalls, name: str, args: tuple[Any, ...], *, key: Hashable | None,
             timeout: float | None) -> Any:
        try:
            return calls.run(getattr(pynvml, name), *args, name=name, key=key, timeout=timeout)
        except pynvml.NVMLError as err:
            raise as_call_error(name, err) from None


def as_call_error(name: str, err: pynvml.NVMLError) -> _vendorlib.VendorCallError:
    code = getattr(err, "value", None)
    kind = _vendorlib.NotSupported if code in UNSUPPORTED_CODES else _vendorlib.VendorCallError
    return kind(name, code, CODE_NAMES.get(code, str(code)))

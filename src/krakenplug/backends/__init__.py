"""Backend registry: a name maps to a lazily imported class, so importing this never touches hardware.

``open_backend`` is the one place that turns a library that fails to load into zero devices (or into
an exit, when the user asked for ``fail_on_init_error``).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from krakenplug import errors
from krakenplug.backends import base, fallback

if TYPE_CHECKING:  # settings imports this registry lazily to validate backends.<name>; no import cycle
    from krakenplug.settings import Settings

logger = logging.getLogger(__name__)

_REGISTRY = {
    "fake": "krakenplug.backends.fake:FakeBackend",
    "nvidia": "krakenplug.backends.nvidia:NvidiaBackend",
    "ascend": "krakenplug.backends.ascend:AscendBackend",
    "cambricon": "krakenplug.backends.cambricon:CambriconBackend",
    "kunlun": "krakenplug.backends.kunlun:KunlunBackend",
    "streamcomputing": "krakenplug.backends.streamcomputing:StreamComputingBackend",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def load_class(name: str) -> base.BackendClass:
    """Imports the backend class registered under ``name``."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise errors.ConfigError(f"backend: unknown backend {name!r}; known backends: {', '.join(names())}") from None
    module_name, class_name = target.split(":")
    cls: base.BackendClass = getattr(importlib.import_module(module_name), class_name)
    return cls


def options_class(name: str) -> type[base.BackendOptions]:
    """The options model of backend ``name`` (lives in its package; imported only when asked for)."""
    return load_class(name).Options


def create(settings: Settings) -> base.Backend:
    """Builds the configured backend (not yet opened); its options were validated with the settings."""
    return load_class(settings.backend)(settings.selected_options(), node_name=settings.node_name)


def open_backend(settings: Settings) -> base.Backend:
    """Creates and opens the backend; a library that cannot load degrades to zero devices."""
    backend = create(settings)
    try:
        backend.open()
    except errors.BackendUnavailable as err:
        if settings.fail_on_init_error:
            raise
        _log_unavailable(settings.backend, err, vendor_library=settings.backend != "fake")
        return fallback.RetryingBackend(backend, first_error=err)
    return backend


def _log_unavailable(name: str, err: Exception, *, vendor_library: bool) -> None:
    """The agent's advice (``krakenplug run``); driver and DaemonSet hints only for backends with a vendor library."""
    logger.warning("backend %s is unavailable: %s", name, err)
    if not vendor_library:  # the fake backend: the error names the file, line and field to fix
        logger.warning("serving zero devices and retrying in the background; set fail_on_init_error to make this "
                       "fatal")
        return
    logger.warning("serving zero devices and retrying in the background; if this node has %s devices, check "
                   "that the driver is loaded and the library path in backends.%s is mounted", name, name)
    logger.warning("if this node should not run the %s backend, fix the DaemonSet's nodeSelector/affinity; set "
                   "fail_on_init_error to make this fatal", name)

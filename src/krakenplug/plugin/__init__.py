"""The device-plugin component: serves the kubelet's device-plugin API v1beta1 for every resource.

``run`` is the component's entry point (called by ``krakenplug run`` on its own thread). It re-reads
the backend's devices whenever the backend reports a change (``SupportsHealthEvents``) and every
``plugin.rescan_interval_seconds`` in any case, and polls the device-plugin directory for kubelet
restarts between those reads.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from krakenplug.backends import base
from krakenplug.hub import DeviceHub
from krakenplug.plugin import manager as manager_mod
from krakenplug.plugin import watcher
from krakenplug.settings import Settings

__all__ = ["run"]

logger = logging.getLogger(__name__)

_HEALTH_THREAD_JOIN_SECONDS = 10.0


def run(settings: Settings, hub: DeviceHub, stop: threading.Event) -> None:
    """Serves until ``stop`` is set, then stops every server and removes its socket.

    Raises RegistrationError when the crash-loop guard trips (the CLI then exits non-zero).
    """
    backend: Any = hub.backend  # transitional: the manager still reads devices itself (issue 8)
    config = settings.plugin
    manager = manager_mod.Manager(backend, config)
    changed = threading.Event()
    health_stop = threading.Event()
    health = _start_health_events(backend, health_stop, changed)
    logger.info("device plugin starting on node %s: directory %s, replicas %d", settings.node_name,
                config.device_plugin_dir, config.replicas)
    try:
        _serve(manager, stop, changed, rescan_seconds=config.rescan_interval_seconds)
    finally:
        health_stop.set()
        manager.close()
        if health is not None:
            health.join(timeout=_HEALTH_THREAD_JOIN_SECONDS)
        logger.info("device plugin stopped")


def _serve(manager: manager_mod.Manager, stop: threading.Event, changed: threading.Event, *,
           rescan_seconds: float) -> None:
    next_rescan = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if changed.is_set() or now >= next_rescan:
            changed.clear()
            manager.refresh()
            next_rescan = now + rescan_seconds
        manager.check_kubelet()
        changed.wait(max(0.0, min(watcher.POLL_SECONDS, next_rescan - time.monotonic())))


def _start_health_events(backend: Any, stop: threading.Event, changed: threading.Event) -> threading.Thread | None:
    if not isinstance(backend, base.SupportsHealthEvents):
        return None
    thread = threading.Thread(target=_watch_health, args=(backend, stop, changed), name="plugin-health", daemon=True)
    thread.start()
    return thread


def _watch_health(backend: Any, stop: threading.Event, changed: threading.Event) -> None:
    try:
        backend.watch_health(stop, changed.set)
    except Exception:  # top of a thread: the periodic rescan still catches every change, only later
        logger.exception("health events of backend %s failed; relying on the periodic rescan",
                         getattr(backend, "name", "?"))

"""The device-plugin component: serves the kubelet's device-plugin API v1beta1 for every resource.

``run`` is the component's entry point (called by ``krakenplug run`` on its own thread). It is event
driven: it sleeps until the device hub publishes a new snapshot, the device-plugin directory changes
(inotify; kubelet.sock recreated, our socket deleted), a registration completes, or ``stop`` is set.
Only without inotify, or while a server waits to be started again, does it also wake on a timer.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from krakenplug import cdi, fswatch
from krakenplug.hub import DeviceHub, Snapshot
from krakenplug.plugin import manager as manager_mod
from krakenplug.plugin import watcher
from krakenplug.settings import Settings

__all__ = ["run"]

logger = logging.getLogger(__name__)

_RETRY_SECONDS = 5.0  # a server that could not start (directory not writable, bind failed) is tried again
_JOIN_SECONDS = 10.0


def run(settings: Settings, hub: DeviceHub, stop: threading.Event) -> None:
    """Serves until ``stop`` is set, then stops every server and removes its socket.

    Raises RegistrationError when another live plugin holds one of our sockets, or when the crash-loop
    guard trips (the CLI then exits non-zero).
    """
    config = settings.plugin
    pulse = watcher.Pulse()
    manager = manager_mod.Manager(hub.backend, config, pulse)
    directory = fswatch.DirectoryWatch(Path(config.device_plugin_dir), poll_seconds=watcher.FALLBACK_POLL_SECONDS)
    follower = threading.Thread(target=_follow_directory, args=(directory, pulse), name="plugin-dir-watch",
                                daemon=True)
    # Wakes the loop below when stop is set; after an error it simply waits with the process.
    threading.Thread(target=_bump_on_stop, args=(stop, pulse), name="plugin-stop", daemon=True).start()
    unsubscribe = hub.subscribe(lambda snapshot: _on_snapshot(manager, pulse, snapshot))
    follower.start()
    logger.info("device plugin starting on node %s: directory %s (%s), replicas %d", settings.node_name,
                config.device_plugin_dir, "inotify" if directory.inotify else "polled", config.replicas)
    # With cdi_enabled Allocate names CDI devices; write their specs, as no vendor but NVIDIA ships them.
    specs = cdi.DeviceSpecs(settings.cdi_dir, config.cdi_prefix, hub.backend) if config.cdi_enabled else None
    try:
        _serve(manager, hub, stop, pulse, directory, specs)
    finally:
        unsubscribe()
        directory.close()
        manager.close()
        follower.join(timeout=_JOIN_SECONDS)
        directory.release()
        logger.info("device plugin stopped")


def _serve(manager: manager_mod.Manager, hub: DeviceHub, stop: threading.Event, pulse: watcher.Pulse,
           directory: fswatch.DirectoryWatch, specs: cdi.DeviceSpecs | None = None) -> None:
    while not stop.is_set():
        seen = pulse.count  # read before looking, so an event during this pass ends the next wait at once
        snapshot = hub.snapshot()
        if snapshot.version > manager.applied_version:
            if specs is not None:
                specs.update(snapshot.devices)  # before the kubelet can be told of a new device
            manager.apply(snapshot)
        manager.reconcile()
        manager.check_kubelet()
        timeout = None
        if manager.pending:
            timeout = _RETRY_SECONDS if directory.inotify else watcher.FALLBACK_POLL_SECONDS
        elif not directory.inotify:
            timeout = watcher.FALLBACK_POLL_SECONDS
        pulse.wait(seen, timeout)


def _on_snapshot(manager: manager_mod.Manager, pulse: watcher.Pulse, snapshot: Snapshot) -> None:
    """On the hub's thread: a health change goes to the streams at once, anything else wakes the loop.

    Only a change of health or NUMA node takes this path; new device IDs wait for the loop, which
    writes their CDI specs first.
    """
    if not manager.publish_fast(snapshot):
        pulse.bump()


def _follow_directory(directory: fswatch.DirectoryWatch, pulse: watcher.Pulse) -> None:
    try:
        while not directory.closed:
            if directory.wait(None):
                pulse.bump()
    except Exception:  # top of a thread: without a fallback a kubelet restart would go unnoticed
        logger.exception("watching %s failed; checking it every %g s instead", directory.directory,
                         watcher.FALLBACK_POLL_SECONDS)
        while not directory.closed:
            time.sleep(watcher.FALLBACK_POLL_SECONDS)
            pulse.bump()


def _bump_on_stop(stop: threading.Event, pulse: watcher.Pulse) -> None:
    stop.wait()
    pulse.bump()

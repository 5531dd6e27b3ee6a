"""Discovery: label this node with the vendor, model, memory, count and driver version of its devices.

* :mod:`.sanitize` makes vendor strings valid label values;
* :mod:`.labels` computes labels from devices (pure; :func:`labels_for` is the one-call version);
* :mod:`.ownership` decides which labels this process may change, and how;
* :mod:`.output` writes node-feature-discovery feature files;
* :mod:`.daemon` runs the loop on the device hub's snapshots; the Node is read and patched through
  :mod:`krakenplug.cluster.nodes`.
"""

from __future__ import annotations

import threading

from krakenplug.discovery.labels import labels_for
from krakenplug.hub import DeviceHub
from krakenplug.settings import Settings

__all__ = ["labels_for", "run"]


def run(settings: Settings, hub: DeviceHub, stop: threading.Event) -> None:
    """Keeps the node's labels in line with the hub's devices until ``stop`` is set."""
    # Imported here so the kubernetes client is loaded only when discovery actually runs.
    from krakenplug.discovery import daemon

    daemon.Labeller(settings, hub).run(stop)

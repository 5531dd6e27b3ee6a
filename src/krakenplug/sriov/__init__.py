"""SR-IOV: keep this node's PFs at the wanted VF count (a component, like the plugin and the exporter).

It runs when the backend implements ``base.SupportsSriov`` (Kunlunxin). It reconciles at start, on every
new device snapshot, when the VF-count node label changes (watched) and every poll interval of the
device hub (which retries changes deferred because pods held a PF). The backend only sets VF counts;
node labels, Events and PodResources come from the shared clients in :mod:`krakenplug.cluster` and
:mod:`krakenplug.kubelet_podresources`.
"""

from __future__ import annotations

import logging
import threading

from krakenplug.backends import base
from krakenplug.hub import DeviceHub
from krakenplug.settings import Settings

__all__ = ["run"]

logger = logging.getLogger(__name__)


def run(settings: Settings, hub: DeviceHub, stop: threading.Event) -> None:
    """Reconciles VF counts until ``stop`` is set; returns at once for a backend without SR-IOV."""
    backend = hub.backend
    if not isinstance(backend, base.SupportsSriov):
        logger.debug("backend %s does not manage SR-IOV", hub.name)
        return
    # Imported here so the kubernetes client is loaded only when SR-IOV actually runs.
    from krakenplug.sriov import loop

    loop.run(settings, hub, backend, stop)

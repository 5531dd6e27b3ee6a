"""Running the SR-IOV controller: its clients, the label watch and the wake-ups."""

from __future__ import annotations

import logging
import threading

from kubernetes.client import ApiClient

from krakenplug.backends import base
from krakenplug.cluster import config as cluster_config
from krakenplug.cluster import events, nodes
from krakenplug.hub import DeviceHub
from krakenplug.kubelet_podresources import PodResourcesClient
from krakenplug.settings import Settings
from krakenplug.sriov.controller import NodeLabel, SriovController
from krakenplug.transitions import TransitionLog

__all__ = ["build", "run"]

logger = logging.getLogger(__name__)

API_TIMEOUT_SECONDS = 10.0


def build(settings: Settings, hub: DeviceHub, backend: base.SupportsSriov) -> SriovController:
    """The controller with its API server, Events and PodResources clients."""
    options = backend.sriov_options()
    kubeconfig = options.kubeconfig or settings.discovery.kubeconfig
    api_client: ApiClient | None = None
    try:
        api_client = cluster_config.connect(kubeconfig)
    except cluster_config.ClusterUnavailable as err:
        logger.warning("no Kubernetes API access (%s); node labels are treated as unset and events are only "
                       "logged", err)
    client = (nodes.NodeClient(api_client, settings.node_name, timeout_seconds=API_TIMEOUT_SECONDS)
              if api_client is not None else None)
    label = NodeLabel(client, options.sriov_node_label, watch=options.sriov_watch_label)
    return SriovController(backend, hub, node_name=settings.node_name, label=label,
                           node_events=events.NodeEvents(api_client, settings.node_name,
                                                         timeout_seconds=API_TIMEOUT_SECONDS),
                           pod_resources=PodResourcesClient(options.pod_resources_socket))


def _set_on(stop: threading.Event, wake: threading.Event) -> None:
    stop.wait()
    wake.set()


def run(settings: Settings, hub: DeviceHub, backend: base.SupportsSriov, stop: threading.Event) -> None:
    """Reconciles on start, new snapshots, label changes and every hub poll interval, until ``stop``."""
    wake = threading.Event()
    unsubscribe = hub.subscribe(lambda _snapshot: wake.set())
    threads = [threading.Thread(target=_set_on, args=(stop, wake), name="sriov-stop", daemon=True)]
    controller: SriovController | None = None
    problems = TransitionLog(logger)
    try:
        threads[0].start()
        while not stop.is_set():
            wake.clear()
            try:
                if controller is None and backend.physical_functions():  # no API client for a node without PFs
                    controller = build(settings, hub, backend)
                    if controller.label.watchable:
                        watcher = threading.Thread(target=controller.label.watch, args=(stop, wake),
                                                   name="sriov-label-watch", daemon=True)
                        watcher.start()
                        threads.append(watcher)
                if controller is not None:
                    controller.reconcile()
            except Exception as err:  # noqa: BLE001 - a vendor or sysfs failure: VFs stay, the agent serves on
                problems.report("reconcile", str(err), logging.ERROR, "SR-IOV reconcile failed (%s); VFs left as "
                                "they are, retrying in %g s", err, hub.poll_seconds)
            else:
                problems.clear("reconcile", logging.INFO, "SR-IOV reconcile works again")
            wake.wait(hub.poll_seconds)
    finally:
        unsubscribe()
        if stop.is_set():  # else a failure: the CLI stops the agent, the daemon threads go with it
            for thread in threads:
                thread.join(timeout=30)
        if controller is not None:
            controller.close()

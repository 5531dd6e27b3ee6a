"""The discovery loop: keep this vendor's node labels (and features file) in line with its devices.

Devices come from the device hub: every new snapshot wakes the loop, which recomputes the labels
locally. Only when the labels change, and every ``interval_seconds`` (which also undoes manual edits of
our labels), is the node read from the API server, and patched only when something differs. A steady
node therefore costs one GET per interval and no writes. API errors are retried with capped
exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from krakenplug.backoff import Backoff
from krakenplug.cluster import config as cluster_config
from krakenplug.cluster import nodes
from krakenplug.discovery import labels, output, ownership
from krakenplug.hub import DeviceHub, Snapshot
from krakenplug.settings import Settings
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

_CONFLICT_ATTEMPTS = 5  # 409s in a row before it counts as a failure and backs off


class Labeller:
    """One vendor's labeller; :meth:`run` blocks until ``stop`` is set."""

    def __init__(self, config: Settings, hub: DeviceHub) -> None:
        self._config = config.discovery
        self._node_name = config.node_name
        self._hub = hub
        self._namespace = labels.vendor_namespace(hub.backend.name)
        self._features = (output.FeaturesFile(self._config.features_file, vendor=self._namespace)
                          if self._config.features_file else None)
        self._backoff = Backoff(initial=self._config.retry_initial_seconds,
                                maximum=max(self._config.retry_max_seconds, self._config.retry_initial_seconds))
        self._nodes: nodes.NodeClient | None = None
        self._next_connect = 0.0
        self._problems = TransitionLog(logger)
        self._wake = threading.Event()  # a new snapshot, or stop

    def run(self, stop: threading.Event) -> None:
        logger.info("discovery for %s labels node %s on every device change and every %g s",
                    self._namespace, self._node_name, self._config.interval_seconds)
        unsubscribe = self._hub.subscribe(lambda _snapshot: self._wake.set())
        waker = threading.Thread(target=self._wake_on, args=(stop,), name="discovery-stop", daemon=True)
        waker.start()
        try:
            self._loop(stop)
        finally:
            unsubscribe()
            if self._nodes is not None:
                self._nodes.close()

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        self._wake.set()

    def _loop(self, stop: threading.Event) -> None:
        own: dict[str, str] | None = None
        due = True  # the node must be looked at: first round, device change or interval elapsed
        next_resync = retry_at = 0.0
        while not stop.is_set():
            self._wake.clear()  # before reading the snapshot: a newer one wakes the wait below
            current = self._own_labels(self._hub.snapshot())
            if current is not None and current != own:
                own, due = current, True
            now = time.monotonic()
            due = due or now >= next_resync
            if due and own is not None and now >= retry_at:
                problems = self._reconcile(own)
                if problems:
                    delay = self._backoff.next_delay()
                    retry_at = now + delay
                    for problem in problems:
                        logger.warning("%s; retrying in %.1f s (attempt %d)", problem, delay, self._backoff.failures)
                else:
                    if self._backoff.failures:
                        logger.info("labels of node %s are up to date again", self._node_name)
                    self._backoff.reset()
                    due, next_resync = False, now + self._config.interval_seconds
            if own is None:  # no good snapshot yet: the hub's next one wakes us
                wake = self._config.interval_seconds
            elif due:
                wake = retry_at - time.monotonic()
            else:
                wake = next_resync - time.monotonic()
            self._wake.wait(max(wake, 0.0))

    # -- one round -------------------------------------------------------------------------------

    def _reconcile(self, own: Mapping[str, str]) -> list[str]:
        """Brings the node and the features file in line with ``own``; returns what went wrong."""
        problems: list[str] = []
        node_labels: dict[str, str] | None = None
        client = self._node_client()
        if client is not None:
            try:
                node_labels = self._sync_node(client, own)
            except nodes.NodeApiError as err:
                problems.append(str(err))
        if self._features is not None:
            view = node_labels if node_labels is not None else self._features.siblings()
            try:
                self._features.write(ownership.plan(self._namespace, own, view).desired)
            except OSError as err:
                problems.append(f"writing features file {self._features.path}: {err}")
        return problems

    def _sync_node(self, client: nodes.NodeClient, own: Mapping[str, str]) -> dict[str, str]:
        """Patches the node until it shows ``own``; returns the node's labels afterwards."""
        for _ in range(_CONFLICT_ATTEMPTS):
            state = client.read()
            plan = ownership.plan(self._namespace, own, state.labels)
            if not plan.changes:
                logger.debug("labels of node %s are up to date", self._node_name)
                return state.labels
            try:
                state = client.patch_labels(plan.changes, resource_version=state.resource_version)
            except nodes.NodeApiError as err:
                if not err.conflict:
                    raise
                logger.debug("node %s changed while we patched it; reading it again", self._node_name)
                continue
            _log_changes(self._node_name, plan.changes)
            return state.labels
        raise nodes.NodeApiError(f"patching labels of node {self._node_name}: the node kept changing "
                                f"({_CONFLICT_ATTEMPTS} conflicts in a row)", status=409)

    # -- inputs ----------------------------------------------------------------------------------

    def _node_client(self) -> nodes.NodeClient | None:
        """The API client, connecting (again) at most once per interval; None without a cluster."""
        if not self._config.patch_node:
            return None
        if self._nodes is None and time.monotonic() >= self._next_connect:
            self._next_connect = time.monotonic() + self._config.interval_seconds
            try:
                api_client = cluster_config.connect(self._config.kubeconfig)
            except cluster_config.ClusterUnavailable as err:
                fallback = (f"only {self._features.path} is written" if self._features
                            else "no labels are written")
                self._problems.report("cluster", str(err), logging.WARNING, "no Kubernetes API access (%s): %s",
                                      err, fallback)
                return None
            self._nodes = nodes.NodeClient(api_client, self._node_name, timeout_seconds=self._config.api_timeout_seconds)
            self._problems.clear("cluster")
            logger.info("labelling node %s through the API server at %s", self._node_name, self._nodes.server)
        return self._nodes

    def _own_labels(self, snapshot: Snapshot) -> dict[str, str] | None:
        """This vendor's labels from the hub's snapshot; None while no good snapshot exists yet."""
        if snapshot.error:
            self._problems.report("devices", snapshot.error, logging.ERROR,
                                  "reading devices of %s failed (%s); keeping the last labels",
                                  self._namespace, snapshot.error)
            if not snapshot.devices:  # the hub keeps the last good list; without one, labels stay as they are
                return None
        elif snapshot.version == 0:
            return None
        else:
            self._problems.clear("devices")
        devices = list(snapshot.devices)
        return labels.vendor_labels(self._namespace, devices, self._driver_version() if devices else None)

    def _driver_version(self) -> str | None:
        try:
            version = self._hub.backend.driver_version()
        except Exception as err:  # noqa: BLE001 - an optional vendor query; labelling goes on without it
            self._problems.report("driver", str(err), logging.WARNING, "reading the driver version of %s failed: %s",
                                  self._namespace, err)
            return None
        self._problems.clear("driver")
        return version


def _log_changes(node: str, changes: Mapping[str, str | None]) -> None:
    added = ", ".join(f"{name}={value}" for name, value in sorted(changes.items()) if value is not None)
    removed = ", ".join(name for name, value in sorted(changes.items()) if value is None)
    logger.info("labelled node %s: set [%s] removed [%s]", node, added, removed)

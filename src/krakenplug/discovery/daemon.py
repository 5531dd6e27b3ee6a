"""The discovery loop: keep this vendor's node labels (and features file) in line with its devices.

Devices are re-read every ``device_poll_seconds``, locally and cheaply; only when the labels they
imply change, and every ``interval_seconds`` (which also undoes manual edits of our labels), is the
node read from the API server, and patched only when something differs. A steady node therefore
costs one GET per interval and no writes. API errors are retried with capped exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from krakenplug.backends import base
from krakenplug.discovery import backoff, kube, labels, output, ownership
from krakenplug.settings import Settings

logger = logging.getLogger(__name__)

_CONFLICT_ATTEMPTS = 5  # 409s in a row before it counts as a failure and backs off


class Labeller:
    """One vendor's labeller; :meth:`run` blocks until ``stop`` is set."""

    def __init__(self, config: Settings, backend: base.Backend) -> None:
        self._config = config.discovery
        self._node_name = config.node_name
        self._backend = backend
        self._namespace = labels.vendor_namespace(backend.name)
        self._features = (output.FeaturesFile(self._config.features_file, vendor=self._namespace)
                          if self._config.features_file else None)
        self._backoff = backoff.Backoff(initial=self._config.retry_initial_seconds,
                                        maximum=max(self._config.retry_max_seconds, self._config.retry_initial_seconds))
        self._nodes: kube.NodeClient | None = None
        self._next_connect = 0.0
        self._reported: dict[str, str] = {}  # problem kind -> last message, to log each problem once

    def run(self, stop: threading.Event) -> None:
        logger.info("discovery for %s labels node %s every %g s (devices checked every %g s)",
                    self._namespace, self._node_name, self._config.interval_seconds, self._config.device_poll_seconds)
        try:
            self._loop(stop)
        finally:
            if self._nodes is not None:
                self._nodes.close()

    def _loop(self, stop: threading.Event) -> None:
        own: dict[str, str] | None = None
        due = True  # the node must be looked at: first round, device change or interval elapsed
        next_resync = retry_at = 0.0
        while not stop.is_set():
            current = self._own_labels()
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
            wake = self._config.device_poll_seconds
            if due and own is not None:
                wake = min(wake, max(retry_at - time.monotonic(), 0.0))
            stop.wait(wake)

    # -- one round -------------------------------------------------------------------------------

    def _reconcile(self, own: Mapping[str, str]) -> list[str]:
        """Brings the node and the features file in line with ``own``; returns what went wrong."""
        problems: list[str] = []
        node_labels: dict[str, str] | None = None
        nodes = self._node_client()
        if nodes is not None:
            try:
                node_labels = self._sync_node(nodes, own)
            except kube.NodeApiError as err:
                problems.append(str(err))
        if self._features is not None:
            view = node_labels if node_labels is not None else self._features.siblings()
            try:
                self._features.write(ownership.plan(self._namespace, own, view).desired)
            except OSError as err:
                problems.append(f"writing features file {self._features.path}: {err}")
        return problems

    def _sync_node(self, nodes: kube.NodeClient, own: Mapping[str, str]) -> dict[str, str]:
        """Patches the node until it shows ``own``; returns the node's labels afterwards."""
        for _ in range(_CONFLICT_ATTEMPTS):
            state = nodes.read()
            plan = ownership.plan(self._namespace, own, state.labels)
            if not plan.changes:
                logger.debug("labels of node %s are up to date", self._node_name)
                return state.labels
            try:
                state = nodes.patch_labels(plan.changes, resource_version=state.resource_version)
            except kube.NodeApiError as err:
                if not err.conflict:
                    raise
                logger.debug("node %s changed while we patched it; reading it again", self._node_name)
                continue
            _log_changes(self._node_name, plan.changes)
            return state.labels
        raise kube.NodeApiError(f"patching labels of node {self._node_name}: the node kept changing "
                                f"({_CONFLICT_ATTEMPTS} conflicts in a row)", status=409)

    # -- inputs ----------------------------------------------------------------------------------

    def _node_client(self) -> kube.NodeClient | None:
        """The API client, connecting (again) at most once per interval; None without a cluster."""
        if not self._config.patch_node:
            return None
        if self._nodes is None and time.monotonic() >= self._next_connect:
            self._next_connect = time.monotonic() + self._config.interval_seconds
            try:
                api_client = kube.connect(self._config.kubeconfig)
            except kube.ClusterUnavailable as err:
                fallback = (f"only {self._features.path} is written" if self._features
                            else "no labels are written")
                self._report_once("cluster", logging.WARNING, "no Kubernetes API access (%s): %s", err, fallback)
                return None
            self._nodes = kube.NodeClient(api_client, self._node_name, timeout_seconds=self._config.api_timeout_seconds)
            self._reported.pop("cluster", None)
            logger.info("labelling node %s through the API server at %s", self._node_name, self._nodes.server)
        return self._nodes

    def _own_labels(self) -> dict[str, str] | None:
        """This vendor's labels from a fresh device snapshot; None when the snapshot failed."""
        try:
            devices = list(self._backend.devices())
        except Exception as err:  # noqa: BLE001 - backend code: a failed read must neither stop discovery nor clear labels
            self._report_once("devices", logging.ERROR, "reading devices of %s failed (%s); keeping the last labels",
                              self._namespace, err)
            return None
        self._reported.pop("devices", None)
        return labels.vendor_labels(self._namespace, devices, self._driver_version() if devices else None)

    def _driver_version(self) -> str | None:
        if not isinstance(self._backend, base.SupportsDriverVersion):
            return None
        try:
            version = self._backend.driver_version()
        except Exception as err:  # noqa: BLE001 - an optional vendor query; labelling goes on without it
            self._report_once("driver", logging.WARNING, "reading the driver version of %s failed: %s",
                              self._namespace, err)
            return None
        self._reported.pop("driver", None)
        return version

    def _report_once(self, kind: str, level: int, message: str, *args: object) -> None:
        text = message % args
        if self._reported.get(kind) != text:
            self._reported[kind] = text
            logger.log(level, "%s", text)


def _log_changes(node: str, changes: Mapping[str, str | None]) -> None:
    added = ", ".join(f"{name}={value}" for name, value in sorted(changes.items()) if value is not None)
    removed = ", ".join(name for name, value in sorted(changes.items()) if value is None)
    logger.info("labelled node %s: set [%s] removed [%s]", node, added, removed)

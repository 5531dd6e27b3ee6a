"""This node seen through the Kubernetes API server: one label, read and watched, and Events on the node.

Vendor-neutral: a backend that takes settings from a node label (Kunlun's ``baidu.com/sriov-num-vfs``)
uses it. Kubernetes access is optional: without cluster configuration (no in-cluster service account and
no kubeconfig) the label is simply "unset" and Events are only logged, after one log line saying so.
The label keeps its last value read successfully when the API server is briefly unreachable, so a
hiccup never looks like the label being removed.

Events follow the kubelet's convention for node events: namespace ``default``, involved object
``Node/<name>`` with the node name as UID, so ``kubectl describe node`` shows them.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

EVENT_NAMESPACE = "default"
_WATCH_SECONDS = 300  # the API server ends each watch after this; we then resume from the last version
_MAX_BACKOFF_SECONDS = 60.0


class LabelUnknown(Exception):
    """The API server could not be asked and no earlier answer is known."""


class NodeApi:
    """Reads, watches and annotates (with Events) the node ``node_name``; thread-safe."""

    def __init__(self, node_name: str, *, kubeconfig: str | None = None, timeout_seconds: float = 10.0,
                 component: str = "krakenplug") -> None:
        self.node_name = node_name
        self._kubeconfig = kubeconfig
        self._timeout = timeout_seconds
        self._component = component
        self._lock = threading.Lock()
        self._client: Any = None
        self._unavailable = False
        self._response: Any = None
        self._labels: dict[str, str] | None = None
        self._logged: set[str] = set()

    # -- connection ------------------------------------------------------------------------------

    def _core(self) -> Any | None:
        """The CoreV1Api, created on first use; None when there is no cluster configuration."""
        with self._lock:
            if self._client is None and not self._unavailable:
                self._client = self._connect()
                self._unavailable = self._client is None
            return None if self._client is None else self._core_api(self._client)

    def _connect(self) -> Any | None:
        from kubernetes import client, config  # imported here: most commands never talk to the API server

        try:
            if self._kubeconfig:
                return config.new_client_from_config(config_file=self._kubeconfig)
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        except (config.ConfigException, OSError) as err:
            where = f"kubeconfig {self._kubeconfig}" if self._kubeconfig else "in-cluster configuration"
            logger.warning("no Kubernetes API access (%s: %s); node labels are treated as unset and events "
                           "are only logged", where, err)
            return None

    @staticmethod
    def _core_api(api_client: Any) -> Any:
        from kubernetes import client

        return client.CoreV1Api(api_client)

    @property
    def available(self) -> bool:
        return self._core() is not None

    def close(self) -> None:
        with self._lock:
            self._interrupt_locked()
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- labels ----------------------------------------------------------------------------------

    def label(self, key: str, *, refresh: bool = True) -> str | None:
        """The label's value (None: unset, or no cluster configuration); raises LabelUnknown.

        With ``refresh`` false the last value seen (read or watched) is returned without asking again.
        """
        core = self._core()
        if core is None:
            return None
        if refresh or self._labels is None:
            try:
                node = core.read_node(self.node_name, _request_timeout=self._timeout)
                self._remember((node.metadata.labels or {}) if node.metadata else {})
            except Exception as err:  # ApiException, urllib3 errors: all mean "could not ask"
                if self._labels is None:
                    raise LabelUnknown(f"cannot read node {self.node_name}: {_short(err)}") from err
                self._log_once(f"read:{_short(err)}", "cannot read node %s (%s); using the last known labels",
                               self.node_name, _short(err))
        return (self._labels or {}).get(key)

    def watch_label(self, key: str, stop: threading.Event, on_change: Callable[[str | None], None]) -> None:
        """Blocks until ``stop``, calling ``on_change(value)`` whenever the label's value changes."""
        if self._core() is None:
            return
        interrupter = threading.Thread(target=self._interrupt_on, args=(stop,), name="node-watch-stop", daemon=True)
        interrupter.start()
        backoff = 1.0
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self._watch_once(key, stop, on_change)
                    backoff = 1.0
                    if time.monotonic() - started < 1.0:  # a server that ends watches at once: no busy loop
                        stop.wait(1.0)
                except Exception as err:  # any API or connection failure: retry with backoff
                    if stop.is_set():
                        break
                    self._log_once(f"watch:{_short(err)}", "watching node %s failed (%s); retrying",
                                   self.node_name, _short(err))
                    stop.wait(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
        finally:
            interrupter.join()

    def _watch_once(self, key: str, stop: threading.Event, on_change: Callable[[str | None], None]) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        core = self._core()
        if core is None:
            return
        before = (self._labels or {}).get(key) if self._labels is not None else None
        node = core.read_node(self.node_name, _request_timeout=self._timeout)
        self._remember((node.metadata.labels or {}) if node.metadata else {})
        self._notify(key, before, on_change)
        version = node.metadata.resource_version
        response = core.list_node(field_selector=f"metadata.name={self.node_name}", watch=True,
                                  resource_version=version, timeout_seconds=_WATCH_SECONDS,
                                  _preload_content=False, _request_timeout=(self._timeout, _WATCH_SECONDS + 30))
        with self._lock:
            self._response = response
        try:
            if stop.is_set():
                return
            for line in iter_resp_lines(response):
                if line and not self._apply_event(json.loads(line), key, on_change):
                    return
        finally:
            with self._lock:
                self._response = None
            response.release_conn()

    def _apply_event(self, event: dict[str, Any], key: str, on_change: Callable[[str | None], None]) -> bool:
        """Handles one watch event; False ends this watch (an ERROR such as 410 Gone: list again)."""
        if event.get("type") == "ERROR":
            return False
        if event.get("type") in ("ADDED", "MODIFIED"):
            before = (self._labels or {}).get(key)
            self._remember((event.get("object") or {}).get("metadata", {}).get("labels") or {})
            self._notify(key, before, on_change)
        return True

    def _remember(self, labels: dict[str, str]) -> None:
        self._labels = dict(labels)

    def _notify(self, key: str, before: str | None, on_change: Callable[[str | None], None]) -> None:
        now = (self._labels or {}).get(key)
        if now != before:
            logger.info("node %s label %s is now %r", self.node_name, key, now)
            on_change(now)

    def _interrupt_on(self, stop: threading.Event) -> None:
        stop.wait()
        with self._lock:
            self._interrupt_locked()

    def _interrupt_locked(self) -> None:
        # Shutting the socket down wakes the thread blocked reading the watch stream.
        if self._response is not None:
            getattr(self._response, "shutdown", self._response.close)()  # shutdown(): urllib3 >= 2.3

    # -- events ----------------------------------------------------------------------------------

    def post_event(self, *, reason: str, message: str, event_type: str = "Warning") -> bool:
        """Records an Event on this node; logs it too. Never raises: an Event is best effort."""
        log = logger.warning if event_type == "Warning" else logger.info
        log("node event %s: %s", reason, message)
        core = self._core()
        if core is None:
            return False
        from kubernetes import client

        now = datetime.datetime.now(datetime.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{self.node_name}.", namespace=EVENT_NAMESPACE),
            involved_object=client.V1ObjectReference(kind="Node", name=self.node_name, uid=self.node_name,
                                                     api_version="v1"),
            reason=reason, message=message, type=event_type, count=1, first_timestamp=now, last_timestamp=now,
            source=client.V1EventSource(component=self._component, host=self.node_name),
            reporting_component=self._component, reporting_instance=self.node_name,
        )
        try:
            core.create_namespaced_event(EVENT_NAMESPACE, body, _request_timeout=self._timeout)
        except Exception as err:  # an Event that cannot be posted is only logged
            self._log_once(f"event:{_short(err)}", "cannot post event %s on node %s: %s", reason, self.node_name,
                           _short(err))
            return False
        return True

    def _log_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message, *args)


def _short(err: BaseException) -> str:
    status = getattr(err, "status", None)
    reason = getattr(err, "reason", None)
    if status:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(err).__name__}: {err}"[:300]

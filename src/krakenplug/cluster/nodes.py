"""This node through the API server: read and patch its labels, and watch them change.

Responses are read as plain JSON rather than through the client's generated models: only
``metadata.labels`` and ``metadata.resourceVersion`` matter, and a newer API server's extra Node
fields must never break us. Every failure becomes a :class:`NodeApiError` that says what was
attempted, the HTTP status and a hint, so callers can log it and retry. Discovery patches labels
here; the SR-IOV component watches its VF-count label here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from krakenplug import backoff, errors
from krakenplug.transitions import TransitionLog

__all__ = ["NodeApiError", "NodeClient", "NodeLabels"]

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
WATCH_SECONDS = 300  # the API server ends each watch after this; we then list and watch again

_HINTS = {
    401: "the API server rejected our credentials (service account token or kubeconfig user)",
    403: "RBAC: the service account needs 'get', 'patch' and 'watch' on nodes (a ClusterRole)",
    404: "no such node: check node_name (NODE_NAME from the downward API in the chart)",
    409: "the node changed between our read and our patch",
    422: "the API server refused the labels",
}


class NodeApiError(errors.KubeApiError):
    """A node read or patch failed."""

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclasses.dataclass(frozen=True)
class NodeLabels:
    labels: dict[str, str]
    resource_version: str


class NodeClient:
    """Reads, patches and watches the labels of one node; thread-safe."""

    def __init__(self, api_client: client.ApiClient, node_name: str, *, timeout_seconds: float) -> None:
        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._node = node_name
        self._timeout = timeout_seconds
        self._watch_lock = threading.Lock()
        self._response: Any = None  # the open watch stream, so that stop can interrupt it

    @property
    def server(self) -> str:
        return str(self._api_client.configuration.host)

    def read(self) -> NodeLabels:
        response = self._call("reading node", self._core.read_node, self._node)
        return self._labels_of(response, action="reading node")

    def patch_labels(self, changes: Mapping[str, str | None], *, resource_version: str) -> NodeLabels:
        """A JSON merge patch of ``metadata.labels`` (None removes a key).

        With ``resource_version`` in the patch the API server applies it only to that version of the
        node and answers 409 otherwise, so a decision based on a stale read never lands.
        """
        body = {"metadata": {"resourceVersion": resource_version, "labels": dict(changes)}}
        response = self._call("patching labels of node", self._core.patch_node, self._node, body,
                              _content_type=MERGE_PATCH)
        return self._labels_of(response, action="patching labels of node")

    def close(self) -> None:
        self._api_client.close()

    def watch_labels(self, stop: threading.Event, on_labels: Callable[[dict[str, str]], None]) -> None:
        """Blocks until ``stop``, calling ``on_labels(labels)`` with the node's labels first and on every change.

        Reads the node, then watches it from that version; a watch the server ends or breaks (410 Gone,
        a dropped connection) starts again from a fresh read, with capped backoff while it keeps failing.
        """
        retry = backoff.Backoff(initial=1.0, maximum=60.0)
        problems = TransitionLog(logger)
        done = threading.Event()
        interrupter = threading.Thread(target=self._interrupt_on, args=(stop, done), name="node-watch-stop",
                                       daemon=True)
        interrupter.start()
        last: dict[str, str] | None = None

        def deliver(labels: dict[str, str]) -> None:
            nonlocal last
            if labels != last:
                last = labels
                on_labels(dict(labels))

        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self._watch_once(stop, deliver)
                except (NodeApiError, urllib3.exceptions.HTTPError, OSError, ValueError) as err:
                    if stop.is_set():
                        break
                    delay = retry.next_delay()
                    problems.report("watch", str(err), logging.WARNING, "watching node %s failed (%s); retrying in "
                                    "%.1f s", self._node, err, delay)
                    stop.wait(delay)
                    continue
                problems.clear("watch", logging.INFO, "watching node %s works again", self._node)
                retry.reset()
                if time.monotonic() - started < 1.0:  # a server that ends watches at once: no busy loop
                    stop.wait(1.0)
        finally:
            done.set()
            if stop.is_set():  # else (a bug escaped) the daemon interrupter ends with stop
                interrupter.join()

    def _watch_once(self, stop: threading.Event, deliver: Callable[[dict[str, str]], None]) -> None:
        state = self.read()
        deliver(state.labels)
        try:
            response = self._core.list_node(
                field_selector=f"metadata.name={self._node}", watch=True, resource_version=state.resource_version,
                timeout_seconds=WATCH_SECONDS, _preload_content=False,
                _request_timeout=(self._timeout, WATCH_SECONDS + 30))
        except ApiException as err:
            raise NodeApiError(self._describe_status("watching node", err), status=err.status) from err
        with self._watch_lock:
            self._response = response
        try:
            if stop.is_set():
                return
            for line in iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":  # e.g. 410 Gone: the version is too old, read again
                    return
                if event.get("type") in ("ADDED", "MODIFIED"):
                    labels = ((event.get("object") or {}).get("metadata") or {}).get("labels") or {}
                    deliver({str(key): str(value) for key, value in labels.items()})
        finally:
            with self._watch_lock:
                self._response = None
            response.release_conn()

    def _interrupt_on(self, stop: threading.Event, done: threading.Event) -> None:
        stop.wait()  # no polling: the watch itself only ends with stop
        if done.is_set():
            return
        with self._watch_lock:
            if self._response is not None:
                # Shutting the socket down wakes the thread blocked reading the watch stream.
                getattr(self._response, "shutdown", self._response.close)()  # shutdown(): urllib3 >= 2.3

    def _call(self, action: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
            try:
                return response.data
            finally:
                response.release_conn()
        except ApiException as err:
            raise NodeApiError(self._describe_status(action, err), status=err.status) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            cause = err.reason if isinstance(err, urllib3.exceptions.MaxRetryError) else err
            # NewConnectionError (refused, unresolvable) subclasses ConnectTimeoutError in urllib3.
            timed_out = not isinstance(cause, urllib3.exceptions.NewConnectionError)
            if timed_out and isinstance(cause, urllib3.exceptions.TimeoutError):
                raise NodeApiError(f"{action} {self._node}: no answer from {self.server} "
                                   f"within {self._timeout:g} s") from err
            raise NodeApiError(f"{action} {self._node}: cannot reach {self.server}: {cause}") from err

    def _describe_status(self, action: str, err: ApiException) -> str:
        message = f"{action} {self._node}: HTTP {err.status} {err.reason or ''}".rstrip()
        detail = _status_message(err.body)
        if detail:
            message += f": {detail}"
        hint = _HINTS.get(err.status or 0)
        return f"{message} ({hint})" if hint else message

    def _labels_of(self, raw: bytes, *, action: str) -> NodeLabels:
        try:
            metadata = json.loads(raw)["metadata"]
            found = metadata.get("labels") or {}
            version = str(metadata.get("resourceVersion") or "")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise NodeApiError(f"{action} {self._node}: the answer is not a Node object: {err}") from err
        if not isinstance(found, dict):
            raise NodeApiError(f"{action} {self._node}: metadata.labels is not a mapping (got {found!r})")
        return NodeLabels(labels={str(k): str(v) for k, v in found.items()}, resource_version=version)


def _status_message(body: Any) -> str:
    """The ``message`` of a Kubernetes Status answer, if the body is one."""
    try:
        return str(json.loads(body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return ""

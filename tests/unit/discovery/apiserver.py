"""A stand-in for the two Node endpoints of the Kubernetes API server, for driving the real client.

``GET`` and ``PATCH /api/v1/nodes/<name>`` behave like the real thing where discovery depends on it:

* PATCH accepts ``application/merge-patch+json`` and ``application/strategic-merge-patch+json``
  (for ``metadata.labels`` the two mean the same) and applies RFC 7386: a null removes a key;
* a ``metadata.resourceVersion`` in the patch is a precondition: another version answers 409;
* invalid label keys or values answer 422, as the API server's validation would;
* errors are ``Status`` objects.

Every request is recorded, and faults (a status, a delay, or both) can be queued for the next requests.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from krakenplug.testing.api_stand_in import ApiStandIn, JsonHandler, status_object

_NODE_PATH = re.compile(r"^/api/v1/nodes/([^/?]+)(\?.*)?$")
_MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
# The Kubernetes label syntax, written out independently of the code under test.
_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_PREFIX_PART = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def label_problem(key: str, value: Any) -> str | None:
    """Why the API server would refuse this label, or None."""
    if not isinstance(value, str):
        return f"label {key!r}: value must be a string"
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not all(_PREFIX_PART.match(part) for part in prefix.split("."))):
        return f"label key {key!r}: invalid prefix"
    if not _NAME.match(name):
        return f"label key {key!r}: invalid name"
    if value and not _NAME.match(value):
        return f"label {key!r}: invalid value {value!r}"
    return None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    content_type: str
    body: Any
    status: int


@dataclasses.dataclass
class Fault:
    status: int | None = None  # None: answer normally (after the delay)
    delay: float = 0.0
    method: str | None = None  # None: the next request of any method


class FakeApiServer(ApiStandIn):
    """Serves nodes on http://127.0.0.1:<port>; use as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._faults: list[Fault] = []
        self._closing = threading.Event()
        self.requests: list[Request] = []
        self.before_patch: Callable[[str], None] | None = None
        super().__init__(self._handler_class(), thread_name="fake-apiserver", first_version=100)

    def _closing_down(self) -> None:
        self._closing.set()  # a delayed answer goes out now

    # -- state -----------------------------------------------------------------------------------

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            self._nodes[name] = {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "uid": f"uid-{name}", "labels": dict(labels or {}),
                             "resourceVersion": self._bump()},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }

    def labels(self, name: str) -> dict[str, str]:
        with self._lock:
            return dict(self._nodes[name]["metadata"].get("labels") or {})

    def edit_labels(self, name: str, changes: dict[str, str | None]) -> None:
        """What ``kubectl label`` would do (a null removes)."""
        with self._lock:
            node = self._nodes[name]
            node["metadata"]["labels"] = merge_patch(node["metadata"].get("labels") or {}, changes)
            node["metadata"]["resourceVersion"] = self._bump()

    def fail(self, status: int | None = None, *, delay: float = 0.0, times: int = 1, method: str | None = None) -> None:
        with self._lock:
            self._faults.extend(Fault(status, delay, method) for _ in range(times))

    def recorded(self, method: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    # -- HTTP ------------------------------------------------------------------------------------

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.method in (None, method):
                    return self._faults.pop(index)
        return None

    def _answer(self, method: str, path: str, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        fault = self._take_fault(method)
        if fault and fault.delay:
            self._closing.wait(fault.delay)
        if fault and fault.status:
            return fault.status, status_object(fault.status, "injected failure")
        match = _NODE_PATH.match(path)
        if not match:
            return 404, status_object(404, f"no route for {path}")
        name = match.group(1)
        if method == "GET":
            return self._get(name)
        if method == "PATCH":
            return self._patch(name, content_type, raw)
        return 405, status_object(405, f"{method} is not supported here")

    def _get(self, name: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            node = self._nodes.get(name)
            if node is None:
                return 404, status_object(404, f'nodes "{name}" not found', reason="NotFound")
            return 200, copy.deepcopy(node)

    def _patch(self, name: str, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        if content_type.split(";")[0].strip() not in _MERGE_TYPES:
            return 415, status_object(415, f"the stand-in does not take patches of type {content_type!r}")
        try:
            patch = json.loads(raw)
        except ValueError as err:
            return 400, status_object(400, f"invalid JSON: {err}")
        if self.before_patch is not None:
            self.before_patch(name)
        with self._lock:
            node = self._nodes.get(name)
            if node is None:
                return 404, status_object(404, f'nodes "{name}" not found', reason="NotFound")
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != node["metadata"]["resourceVersion"]:
                return 409, status_object(409, f'Operation cannot be fulfilled on nodes "{name}": the object has been '
                                         "modified; please apply your changes to the latest version", reason="Conflict")
            patched = merge_patch(node, patch)
            for key, value in (patched["metadata"].get("labels") or {}).items():
                problem = label_problem(key, value)
                if problem:
                    return 422, status_object(422, problem, reason="Invalid")
            patched["metadata"]["resourceVersion"] = self._bump()
            self._nodes[name] = patched
            return 200, copy.deepcopy(patched)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(JsonHandler):
            def _serve(self) -> None:
                raw = self.read_body()
                content_type = self.headers.get("Content-Type") or ""
                status, payload = server._answer(self.command, self.path, content_type, raw)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                with server._lock:
                    server.requests.append(Request(self.command, self.path, content_type, body, status))
                self.send_json(status, payload)

            do_GET = do_PATCH = do_PUT = do_POST = _serve

        return Handler

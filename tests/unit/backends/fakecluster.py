"""Cluster stand-ins for the vendor backend tests (the fake libraries and host trees are in fakelib.py).

* ``KubeApiStandIn``: a tiny HTTP API server (GET/watch a node, POST events) for the real kubernetes client.
* ``PodResourcesStandIn``: the kubelet's PodResources List on a unix socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc

from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc


# -- Kubernetes API stand-in -------------------------------------------------------------------------


class KubeApiStandIn:
    """Serves one Node (GET, and watch with chunked events) and accepts Events, on 127.0.0.1."""

    def __init__(self, node_name: str, labels: Mapping[str, str] | None = None) -> None:
        self.node_name = node_name
        self.labels = dict(labels or {})
        self.version = 1
        self.events: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.watches = 0
        self._changed = threading.Condition()
        self._closing = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="kube-api-stand-in", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KubeApiStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }))
        return path

    def set_label(self, key: str, value: str | None) -> None:
        with self._changed:
            if value is None:
                self.labels.pop(key, None)
            else:
                self.labels[key] = value
            self.version += 1
            self._changed.notify_all()

    def event_reasons(self) -> list[str]:
        return [event["reason"] for event in list(self.events)]

    def node(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "uid": "uid-1", "resourceVersion": str(self.version),
                             "labels": dict(self.labels)}}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1  # one write per response: no delayed-ACK stalls between headers and body

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlparse(self.path)
                api.requests.append(f"GET {url.path}")
                query = parse_qs(url.query)
                if url.path == f"/api/v1/nodes/{api.node_name}":
                    self._json(200, api.node())
                elif url.path == "/api/v1/nodes" and query.get("watch", [""])[0].lower() == "true":
                    self._watch(int(query.get("resourceVersion", ["0"])[0]))
                else:
                    self._json(404, {"kind": "Status", "code": 404, "message": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                api.requests.append(f"POST {self.path}")
                if self.path == "/api/v1/namespaces/default/events":
                    api.events.append(body)
                    self._json(201, body)
                else:
                    self._json(404, {"kind": "Status", "code": 404})

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _watch(self, seen: int) -> None:
                api.watches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while True:
                        with api._changed:
                            api._changed.wait_for(lambda last=seen: api._closing or api.version > last, timeout=5)
                            if api._closing:
                                break
                            if api.version <= seen:
                                continue
                            seen, node = api.version, api.node()
                        line = json.dumps({"type": "MODIFIED", "object": node}).encode() + b"\n"
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client went away
                self.close_connection = True

        return Handler


# -- PodResources stand-in -------------------------------------------------------------------------


class PodResourcesStandIn(pr_grpc.PodResourcesListerServicer):
    """Answers List with ``allocations``: {(pod, resource): [device IDs]}; change it between calls."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.allocations: dict[tuple[str, str], list[str]] = {}
        self.calls = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pr_grpc.add_PodResourcesListerServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{socket_path}")

    def start(self) -> PodResourcesStandIn:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait()

    def List(self, request: pr_pb2.ListPodResourcesRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.calls += 1
        pods = []
        for (pod, resource), ids in self.allocations.items():
            container = pr_pb2.ContainerResources(
                name="main", devices=[pr_pb2.ContainerDevices(resource_name=resource, device_ids=[device_id])
                                      for device_id in ids])
            pods.append(pr_pb2.PodResources(name=pod, namespace="default", containers=[container]))
        return pr_pb2.ListPodResourcesResponse(pod_resources=pods)

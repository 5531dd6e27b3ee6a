"""What the Kubernetes API server stand-ins share: an HTTP server on 127.0.0.1 answering JSON, started
and stopped as a context manager, a kubeconfig that points the real client at it, resource versions and
``Status`` errors as the API server writes them."""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

Json = dict[str, Any]


def status_object(code: int, message: str, reason: str | None = None) -> Json:
    """The ``Status`` object the API server answers an error with."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason or HTTPStatus(code).phrase.replace(" ", ""), "code": code}


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler that reads the request body and answers JSON, quietly."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (timeout tests)

    def log_message(self, *args: Any) -> None:
        pass


class ApiStandIn:
    """The server's lifecycle and address; a subclass serves its resources through ``handler``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, thread_name: str, first_version: int) -> None:
        self._version = first_version
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=thread_name,
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing_down()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _closing_down(self) -> None:
        """Ends what a request may be waiting on (delays, watches) before the server stops."""

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: stand-in\n  cluster:\n    server: {self.url}\n"
            "users:\n- name: tester\n  user:\n    token: test-token\n"
            "contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: tester\n"
            "current-context: stand-in\n"
        )
        return path

    def _bump(self) -> str:
        """The next resource version (call it under the subclass's lock)."""
        self._version += 1
        return str(self._version)

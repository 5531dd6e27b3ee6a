"""HTTP client helpers for the exporter's unit and e2e tests: a free port, one GET, waiting for a server.

Importable from every test (pytest puts tests/ on sys.path for tests/conftest.py).
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
from collections.abc import Callable


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str = "/metrics", *, timeout: float = 5.0, context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET on its own connection to 127.0.0.1 (HTTPS with ``context``): status, headers, body."""
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def status(port: int, path: str = "/metrics", timeout: float = 5.0) -> int:
    """The status of one plain-HTTP GET."""
    return get(port, path, timeout=timeout)[0]


def wait_until_serving(port: int, *, running: Callable[[], bool], log: Callable[[], str],
                       timeout: float = 30.0) -> None:
    """Waits for /healthz (exempt from basic auth) to answer 200 while ``running()``; fails with ``log()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert running(), log()
        try:
            if status(port, "/healthz", timeout=2) == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the exporter did not answer /healthz within {timeout} s:\n{log()}")

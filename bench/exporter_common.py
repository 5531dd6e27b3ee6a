"""Shared set-up of the exporter benchmarks: a node with N fake devices and P pods, measured from outside.

The exporter runs as a real ``krakenplug run --no-plugin --no-discovery`` process; a small PodResources
v1 server in this process plays the kubelet. The reference for latency is the same HTTP server (and
WSGI gateway) serving a pre-rendered payload from a trivial WSGI app, also in its own process (``python bench/exporter_common.py static``).
CPU is read from /proc/<pid>/task/*/schedstat (nanoseconds), memory from /proc/<pid>/status.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Self

import grpc
import yaml

from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc

RESOURCE = "krakenplug.pcl.ac.cn/fake"
ROOT = Path(__file__).resolve().parent.parent


def write_devices(path: Path, count: int) -> Path:
    devices = [{"id": f"fake-{i}", "model": "KrakenSim-80G", "memory_mb": 81920, "numa_node": i % 2,
                "utilization": float(i % 101), "memory_used_mb": float(512 * i), "pci_bus_id": f"0000:{i:02x}:00.0"}
               for i in range(count)]
    path.write_text(yaml.safe_dump({"devices": devices}))
    return path


def pods_answer(pods: int, devices: int, *, generation: int = 0) -> pr_pb2.ListPodResourcesResponse:
    """``pods`` pods with one container each, spread over ``devices`` devices as time-slicing replicas."""
    answer = []
    for i in range(pods):
        device_id = f"fake-{i % devices}::{i // devices}"
        topology = pr_pb2.TopologyInfo(nodes=[pr_pb2.NUMANode(ID=i % devices % 2)])
        entry = pr_pb2.ContainerDevices(resource_name=RESOURCE, device_ids=[device_id], topology=topology)
        answer.append(pr_pb2.PodResources(name=f"job-{generation}-{i}", namespace="bench",
                                          containers=[pr_pb2.ContainerResources(name="main", devices=[entry])]))
    return pr_pb2.ListPodResourcesResponse(pod_resources=answer)


class PodResourcesServer(pr_grpc.PodResourcesListerServicer):
    """Answers List with ``self.answer`` (a test may swap it) on a unix socket."""

    def __init__(self, socket_path: Path, answer: pr_pb2.ListPodResourcesResponse) -> None:
        self.socket_path, self.answer, self.calls = socket_path, answer, 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pr_grpc.add_PodResourcesListerServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix:{socket_path}")

    def List(self, request, context):
        self.calls += 1
        return self.answer

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None).wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(port: int, path: str = "/healthz", *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                connection.close()
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered http://127.0.0.1:{port}{path} within {timeout} s")


@contextlib.contextmanager
def node(devices: int, pods: int, *, refresh_seconds: float = 5.0) -> Iterator[tuple[int, int, PodResourcesServer]]:
    """Runs the agent (exporter only) on a node with ``devices`` and ``pods``; yields (port, pid, kubelet)."""
    with tempfile.TemporaryDirectory(prefix="kp-bench-", dir="/tmp") as scratch:
        base = Path(scratch)
        devices_file = write_devices(base / "devices.yaml", devices)
        port = free_port()
        with PodResourcesServer(base / "pr.sock", pods_answer(pods, devices)) as kubelet:
            env = {**os.environ, "KRAKENPLUG_EXPORTER__POD_RESOURCES_REFRESH_SECONDS": str(refresh_seconds)}
            command = [sys.executable, "-m", "krakenplug", "run", "--backend", "fake", "--fake-devices",
                       str(devices_file), "--pod-resources-socket", str(base / "pr.sock"), "--metrics-address",
                       f"127.0.0.1:{port}", "--node-name", "bench-node", "--no-plugin", "--no-discovery",
                       "--log-level", "warning"]
            with _process(command, env) as process:
                wait_http(port)
                _wait_for_pods(port, pods)
                yield port, process.pid, kubelet


@contextlib.contextmanager
def static_server(payload: bytes) -> Iterator[tuple[int, int]]:
    """The same HTTP server class serving ``payload`` for every /metrics; yields (port, pid)."""
    with tempfile.NamedTemporaryFile(prefix="kp-payload-", dir="/tmp") as payload_file:
        payload_file.write(payload)
        payload_file.flush()
        port = free_port()
        command = [sys.executable, str(Path(__file__).resolve()), "static", payload_file.name, str(port)]
        with _process(command, dict(os.environ)) as process:
            wait_http(port)
            yield port, process.pid


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def _wait_for_pods(port: int, pods: int, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = Scraper(port).get()
        if pods == 0 or body.count(b"krakenplug_device_allocation_info{") == pods:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the exporter on port {port} did not attribute {pods} pods within {timeout} s")


# What Prometheus 3 sends by default (scrape_protocols): OpenMetrics first, gzip accepted.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
              "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
              "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
}


class Scraper:
    """One keep-alive connection, like Prometheus keeps between scrapes; ``headers`` go with every request."""

    headers: dict[str, str] = {}  # exporter_scrape.py --as-prometheus sets PROMETHEUS_HEADERS for every scraper

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str = "/metrics") -> bytes:
        self._connection.request("GET", path, headers=self.headers)
        answer = self._connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {answer.status}")
        return gzip.decompress(body) if answer.getheader("Content-Encoding") == "gzip" else body

    def timed(self, count: int, *, interval: float = 0.0) -> list[float]:
        """Latencies (s) of ``count`` scrapes, ``interval`` seconds apart (start to start)."""
        latencies, next_start = [], time.monotonic()
        for _ in range(count):
            if interval:
                time.sleep(max(0.0, next_start - time.monotonic()))
                next_start += interval
            started = time.perf_counter()
            self.get()
            latencies.append(time.perf_counter() - started)
        return latencies

    def close(self) -> None:
        self._connection.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of ``pid``, with nanosecond resolution."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            fields[key] = int(value.split()[0])
    return fields


def _serve_static(payload_path: str, port: int) -> None:
    from krakenplug.exporter.server import MetricsServer

    payload = Path(payload_path).read_bytes()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
        return [payload]

    server = MetricsServer(f"127.0.0.1:{port}", app)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    stop.wait()
    server.stop()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "static":
        _serve_static(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: exporter_common.py static PAYLOAD_FILE PORT")

"""Test helpers for the Kunlun and StreamComputing backends and the SR-IOV code.

* ``Fixture``: the "key=value" file the fake XPUML/STCML libraries re-read on every call (fixture.h).
* ``make_pci_device``, ``make_dev_tree``: fake sysfs and /dev trees.
* ``FakeKernel``: the sysfs writer the SR-IOV code is given in tests. It enforces the kernel's rules for
  ``sriov_numvfs`` on the fake tree (ERANGE above ``sriov_totalvfs``, EBUSY for N -> M without 0, EINVAL
  for junk) and creates or removes the VF directories and ``virtfn<i>``/``physfn`` links, like
  drivers/pci/iov.c does on a real one.
* ``KubeApiStandIn``: a tiny HTTP API server (GET/watch a node, POST events) for the real kubernetes client.
* ``PodResourcesStandIn``: the kubelet's PodResources List on a unix socket.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc

from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc

FAKELIBS = Path(__file__).parent / "fakelibs"
FAKE_STC_SMI = FAKELIBS / "fake-stc-smi"


def compile_fake_library(source: str, soname: str, out_dir: Path, *, defines: Sequence[str] = ()) -> Path:
    """The shared builder from this directory's conftest.py, loaded by path (``import conftest`` is ambiguous)."""
    spec = importlib.util.spec_from_file_location("_backends_conftest_b", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compile_fake_library(source, soname, out_dir, defines=defines)


class Fixture:
    """One fake library's fixture file; every change rewrites it atomically."""

    def __init__(self, path: Path, values: Mapping[str, Any] | None = None) -> None:
        self.path = path
        self.values: dict[str, Any] = {}
        self.set(values or {})

    def set(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        self._flush()

    def update(self, **changes: Any) -> None:
        """``update(**{"dev1.state": 207})``; a value of None removes the key."""
        for key, value in changes.items():
            if value is None:
                self.values.pop(key, None)
            else:
                self.values[key] = value
        self._flush()

    def _flush(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("".join(f"{key}={value}\n" for key, value in self.values.items()))
        os.replace(temporary, self.path)


def expect_change(changes: threading.Semaphore, shown: Callable[[], bool]) -> None:
    """Waits for the next ``changed()`` call (released on ``changes``) and checks that it shows the new state."""
    assert changes.acquire(timeout=10), "watch_health reported no change"
    assert shown(), "changed() was called but the devices do not show the change"


def make_dev_tree(root: Path, names: Iterable[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_text("")
    return root


def pci_dir(sysfs: Path, bus_id: str) -> Path:
    return sysfs / "bus" / "pci" / "devices" / bus_id


def make_pci_device(sysfs: Path, bus_id: str, *, vendor: int, device: int, numa_node: int = -1,
                    total_vfs: int | None = None) -> Path:
    """A PCI function in the fake sysfs; ``total_vfs`` makes it an SR-IOV capable PF."""
    directory = pci_dir(sysfs, bus_id)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vendor").write_text(f"0x{vendor:04x}\n")
    (directory / "device").write_text(f"0x{device:04x}\n")
    (directory / "numa_node").write_text(f"{numa_node}\n")
    if total_vfs is not None:
        (directory / "sriov_totalvfs").write_text(f"{total_vfs}\n")
        (directory / "sriov_numvfs").write_text("0\n")
    return directory


def vf_bus_id(pf_bus_id: str, position: int) -> str:
    """Where the fake kernel puts VF ``position`` of a PF: same bus and slot, function position + 1."""
    return f"{pf_bus_id[:-1]}{position + 1}"


class FakeKernel:
    """A ``sriov_numvfs`` writer with the kernel's rules, acting on a fake sysfs tree."""

    def __init__(self, sysfs: Path, *, vf_device: int = 0x3685,
                 on_change: Callable[[str, list[str]], None] | None = None) -> None:
        self.sysfs = sysfs
        self.vf_device = vf_device
        self.on_change = on_change
        self.writes: list[tuple[str, str]] = []
        self.errors: dict[tuple[str, int], int] = {}  # (PF bus ID, count) -> errno the driver answers with

    def __call__(self, path: str, value: str) -> None:
        pf = Path(path).parent
        self.writes.append((pf.name, value))
        if Path(path).name != "sriov_numvfs" or not (pf / "sriov_totalvfs").exists():
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if not value.strip().isdigit():
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        wanted, total = int(value), int((pf / "sriov_totalvfs").read_text())
        current = int((pf / "sriov_numvfs").read_text())
        if wanted > total:
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE), path)
        if wanted == current:
            return
        if current and wanted:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        if (pf.name, wanted) in self.errors:
            code = self.errors[(pf.name, wanted)]
            raise OSError(code, os.strerror(code), path)
        self._set(pf, wanted)

    def _set(self, pf: Path, count: int) -> None:
        for link in pf.glob("virtfn*"):
            vf = Path(os.path.realpath(link))
            link.unlink()
            (vf / "physfn").unlink()
            for child in vf.iterdir():
                child.unlink()
            vf.rmdir()
        vendor = int((pf / "vendor").read_text(), 16)
        numa = int((pf / "numa_node").read_text())
        created = []
        for position in range(count):
            bus_id = vf_bus_id(pf.name, position)
            vf = make_pci_device(self.sysfs, bus_id, vendor=vendor, device=self.vf_device, numa_node=numa)
            (vf / "physfn").symlink_to(f"../{pf.name}")
            (pf / f"virtfn{position}").symlink_to(f"../{bus_id}")
            created.append(bus_id)
        (pf / "sriov_numvfs").write_text(f"{count}\n")
        if self.on_change is not None:
            self.on_change(pf.name, created)


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

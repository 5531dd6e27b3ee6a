"""``krakenplug demo``: the whole node agent on one machine, no cluster, no accelerator.

It starts the kubelet simulator (with a PodResources socket) in a temporary directory, runs a real
``krakenplug run`` process on the fake backend against it, and walks through what a user wants to
see: registration, the devices, an allocation for a pod, a fault and its recovery, and the pod's
metrics. Everything is stopped and removed at the end (or on Ctrl-C with ``--keep-running``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import yaml

from krakenplug.testing import AdmissionError, KubeletSimulator, ResourceState
from krakenplug.testing.fake_devices import set_health

RESOURCE = "krakenplug.pcl.ac.cn/fake"
POD, NAMESPACE = "trainer-0", "demo"
WAIT_SECONDS = 15.0
METRICS_WAIT_SECONDS = 8.0


class DemoError(Exception):
    """A demo step failed; the message says which and why."""


class _Session:
    """The demo's moving parts: work directory, simulator, agent process and its log."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="kp-demo-", dir="/tmp"))  # short: unix socket paths
        self.devices_file = self.workdir / "fake-devices.yaml"
        self.log_path = self.workdir / "agent.log"
        self.port = _free_port()
        self.exporter = importlib.util.find_spec("krakenplug.exporter") is not None
        self.kubelet = KubeletSimulator(self.workdir, pod_resources_socket=self.workdir / "pod-resources.sock")
        self.agent: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if importlib.util.find_spec("krakenplug.plugin") is None:
            raise DemoError("the device plugin component (krakenplug.plugin) is not installed")
        self.devices_file.write_text(resources.files("krakenplug").joinpath("data/fake-devices.yaml").read_text())
        self.kubelet.start()
        env = {key: value for key, value in os.environ.items() if not key.startswith("KRAKENPLUG_")}
        env["KRAKENPLUG_EXPORTER__POD_RESOURCES_REFRESH_SECONDS"] = "0.5"  # the pod label shows up at once
        with open(self.log_path, "wb") as log:
            # A session of its own: Ctrl-C reaches only the demo, which then stops the agent in order.
            self.agent = subprocess.Popen(self.agent_argv(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)

    def agent_argv(self) -> list[str]:
        return [sys.executable, "-m", "krakenplug", "run", "--backend", "fake", "--node-name", "demo-node",
                "--device-plugin-dir", str(self.workdir),
                "--pod-resources-socket", str(self.workdir / "pod-resources.sock"),
                "--metrics-address", f"127.0.0.1:{self.port}", "--fake-devices", str(self.devices_file),
                "--exporter" if self.exporter else "--no-exporter", "--no-discovery"]

    def wait(self, predicate: Callable[[dict[str, ResourceState]], bool], what: str) -> dict[str, ResourceState]:
        """Waits for the simulator's state, failing early when the agent process dies."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            self.check_agent()
            try:
                return self.kubelet.wait_for(predicate, timeout=min(0.5, max(0.0, deadline - time.monotonic())),
                                             what=what)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise DemoError(f"timed out after {WAIT_SECONDS:g}s waiting for {what}") from None

    def check_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is not None:
            raise DemoError(f"the agent exited with status {self.agent.returncode}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no agent log)"

    def close(self) -> int | None:
        """Stops the agent (SIGTERM, then kill) and the simulator; returns the agent's exit status."""
        status = None
        if self.agent is not None:
            if self.agent.poll() is None:
                self.agent.send_signal(signal.SIGTERM)
            try:
                status = self.agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                status = self.agent.wait()
        self.kubelet.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return status


def main(keep_running: bool = False) -> int:
    session = _Session()
    failure = None
    try:
        _run_steps(session)
        if keep_running:
            _serve_until_interrupted(session)
    except (DemoError, AdmissionError, OSError) as err:
        failure = f"{err}\nlast lines of the agent log:\n{session.log_tail()}"
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:  # whatever happened, no agent process or socket is left behind
        status = session.close()
    if failure is None and status != 0:
        failure = f"the agent exited with status {status} on SIGTERM"
    if failure is not None:
        print(f"\ndemo failed: {failure}", file=sys.stderr)
        return 1
    print("\nDone: agent stopped cleanly, sockets and temporary files removed.")
    return 0


def _run_steps(session: _Session) -> None:
    print("KrakenPlug demo: kubelet simulator + `krakenplug run` on the fake backend")
    print(f"  work dir {session.workdir}")
    session.start()
    state = _show_registration(session)
    _show_devices(state, session.devices_file)
    _show_allocation(session)
    _show_fault(session, _healthy_free_device(session))
    if session.exporter:
        _show_metrics(session.port)


def _section(title: str) -> None:
    print(f"\n== {title}")


def _show_registration(session: _Session) -> ResourceState:
    _section("Registration")
    state = session.wait(lambda r: r[RESOURCE].connected and r[RESOURCE].capacity > 0,
                         f"{RESOURCE} to register")[RESOURCE]
    print(f"  {RESOURCE} registered on {state.endpoint}: capacity {state.capacity}, "
          f"allocatable {state.allocatable}")
    print(f"  kubelet calls so far: {', '.join(dict.fromkeys(session.kubelet.calls))}")
    return state


def _show_devices(state: ResourceState, devices_file: Path) -> None:
    _section("Devices (as the kubelet sees them; model and memory from the devices file)")
    specs = {spec["id"]: spec for spec in yaml.safe_load(devices_file.read_text())["devices"]}
    rows = [["ID", "MODEL", "MEMORY(MB)", "NUMA", "HEALTH"]]
    for device_id, view in state.devices.items():
        spec = specs.get(device_id, {})
        rows.append([device_id, str(spec.get("model", "-")), str(spec.get("memory_mb", "-")),
                     ",".join(str(n) for n in view.numa_nodes) or "-", view.health])
    _print_table(rows)


def _show_allocation(session: _Session) -> None:
    _section(f"Allocate 2 devices to pod {NAMESPACE}/{POD}")
    calls_before = len(session.kubelet.calls)
    response = session.kubelet.allocate(RESOURCE, 2, pod=POD, namespace=NAMESPACE)
    held = session.kubelet.allocations()[-1]
    print(f"  kubelet calls   {', '.join(session.kubelet.calls[calls_before:])}")
    print(f"  devices         {_placement(held.device_numa)}")
    container = response.container_responses[0]
    _print_pairs("env", [f"{key}={value}" for key, value in sorted(container.envs.items())])
    _print_pairs("device nodes", [f"{d.host_path} -> {d.container_path} ({d.permissions})" for d in container.devices])
    _print_pairs("mounts", [f"{m.host_path} -> {m.container_path}{' (ro)' if m.read_only else ''}"
                            for m in container.mounts])
    _print_pairs("annotations", [f"{key}={value}" for key, value in sorted(container.annotations.items())])


def _show_fault(session: _Session, device_id: str) -> None:
    _section(f"Fault injection: {device_id} turns Unhealthy in the devices file, then recovers")
    set_health(session.devices_file, device_id, "Unhealthy")
    state = session.wait(lambda r: r[RESOURCE].allocatable == r[RESOURCE].capacity - 1, "allocatable to drop")
    print(f"  {device_id} Unhealthy -> capacity {state[RESOURCE].capacity}, allocatable {state[RESOURCE].allocatable}")
    set_health(session.devices_file, device_id, "Healthy")
    state = session.wait(lambda r: r[RESOURCE].allocatable == r[RESOURCE].capacity, "allocatable to recover")
    print(f"  {device_id} Healthy   -> capacity {state[RESOURCE].capacity}, allocatable {state[RESOURCE].allocatable}")


def _show_metrics(port: int) -> None:
    url = f"http://127.0.0.1:{port}/metrics"
    _section(f"Metrics ({url}, utilization per device, attributed to the pod)")
    deadline = time.monotonic() + METRICS_WAIT_SECONDS
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [line for line in _fetch(url).splitlines() if line.startswith("krakenplug_device_util{")]
        if any(f'pod="{POD}"' in line for line in lines):
            break
        time.sleep(0.25)
    if not lines:
        raise DemoError(f"no krakenplug_device_util samples at {url}")
    if not any(f'pod="{POD}"' in line for line in lines):
        print(f"  (the pod label did not appear within {METRICS_WAIT_SECONDS:g}s)")
    for line in lines:
        print(f"  {line}")


def _serve_until_interrupted(session: _Session) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background with SIGINT ignored
    print("\nThe agent keeps serving. Try:")
    if session.exporter:
        print(f"  curl -s http://127.0.0.1:{session.port}/metrics | grep krakenplug_device_")
    print(f"  edit {session.devices_file} (health, utilization) and watch the metrics change")
    print(f"  a malformed edit is logged with its line and field to {session.log_path}; the last good state is kept")
    print("Press Ctrl-C to stop.")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            session.check_agent()
            time.sleep(0.5)


# -- small helpers -------------------------------------------------------------------------------

def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends --keep-running like Ctrl-C

def _healthy_free_device(session: _Session) -> str:
    taken = {device_id for held in session.kubelet.allocations() for device_id in held.device_ids}
    state = session.kubelet.resources()[RESOURCE]
    free = [device_id for device_id, view in state.devices.items() if view.healthy and device_id not in taken]
    if not free:
        raise DemoError("no free healthy device left for the fault injection step")
    return free[-1]


def _placement(device_numa: tuple[tuple[str, tuple[int, ...]], ...]) -> str:
    described = ", ".join(f"{device_id} (NUMA {','.join(map(str, nodes)) or '-'})" for device_id, nodes in device_numa)
    nodes = {node for _, device_nodes in device_numa for node in device_nodes}
    if len(nodes) == 1:
        return f"{described}: all on NUMA node {nodes.pop()}"
    return f"{described}: spread over NUMA nodes {sorted(nodes)}" if nodes else described


def _print_pairs(label: str, values: list[str]) -> None:
    for number, value in enumerate(values or ["(none)"]):
        print(f"  {label if number == 0 else '':<15} {value}")


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _fetch(url: str) -> str:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(url, timeout=2) as reply:
            return str(reply.read().decode())
    return ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

"""Node-level end-to-end fixtures: a real ``krakenplug run`` process against the kubelet simulator.

``start_agent(*flags)`` starts the agent on the fake backend with the node's directories; its output
goes to a log file that is printed when the test fails. Every process is stopped at teardown.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import pytest
import yaml

from krakenplug.testing import KubeletSimulator

FAKE_RESOURCE = "krakenplug.pcl.ac.cn/fake"
WAIT_SECONDS = 30.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


class DevicesFile:
    """The fake backend's devices file; every edit replaces it atomically so the agent never reads half."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict:
        return yaml.safe_load(self.path.read_text())

    def write(self, data: dict) -> None:
        temp = self.path.with_suffix(".tmp")
        temp.write_text(yaml.safe_dump(data, sort_keys=False))
        os.replace(temp, self.path)

    def set_health(self, device_id: str, health: str) -> None:
        data = self.load()
        for device in data["devices"]:
            if device["id"] == device_id:
                device["health"] = health
                break
        else:
            raise KeyError(f"no device {device_id} in {self.path}")
        self.write(data)

    def remove(self, device_id: str) -> None:
        data = self.load()
        data["devices"] = [device for device in data["devices"] if device["id"] != device_id]
        self.write(data)

    @property
    def ids(self) -> list[str]:
        return [device["id"] for device in self.load()["devices"]]


@dataclasses.dataclass
class Node:
    """Paths of one simulated node: the device-plugin directory, the PodResources socket, the device file."""

    root: Path
    plugin_dir: Path
    pod_resources_socket: Path
    devices: DevicesFile


@dataclasses.dataclass
class Agent:
    process: subprocess.Popen
    log_path: Path
    argv: list[str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def terminate(self, *, timeout: float = WAIT_SECONDS) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> int:
        self.process.kill()
        return self.process.wait(timeout=WAIT_SECONDS)


@pytest.fixture
def node(short_tmp: Path) -> Node:
    plugin_dir = short_tmp / "dp"
    plugin_dir.mkdir()
    devices = DevicesFile(short_tmp / "devices.yaml")
    devices.path.write_text(resources.files("krakenplug").joinpath("data/fake-devices.yaml").read_text())
    return Node(short_tmp, plugin_dir, short_tmp / "pr.sock", devices)


@pytest.fixture
def kubelet(node: Node) -> Iterator[KubeletSimulator]:
    simulator = KubeletSimulator(node.plugin_dir, pod_resources_socket=node.pod_resources_socket)
    simulator.start()
    yield simulator
    simulator.stop()


def agent_env() -> dict[str, str]:
    """This environment without KRAKENPLUG_* settings, so only the test's flags count."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith("KRAKENPLUG_") and key != "NODE_NAME"}


@pytest.fixture
def start_agent(node: Node, request: pytest.FixtureRequest) -> Iterator[Callable[..., Agent]]:
    """Starts ``krakenplug run`` with the node's paths plus ``flags``; stops every agent at teardown."""
    agents: list[Agent] = []

    def start(*flags: str, config: dict | None = None) -> Agent:
        argv = [sys.executable, "-m", "krakenplug", "run", "--backend", "fake", "--node-name", "e2e-node",
                "--device-plugin-dir", str(node.plugin_dir), "--pod-resources-socket", str(node.pod_resources_socket),
                "--fake-devices", str(node.devices.path), "--no-exporter", "--no-discovery", "--log-level", "debug",
                *flags]
        if config is not None:
            config_path = node.root / f"config-{len(agents)}.yaml"
            config_path.write_text(yaml.safe_dump({"version": "v1", **config}))
            argv += ["--config", str(config_path)]
        log_path = node.root / f"agent-{len(agents)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=agent_env(),
                                       cwd=node.root)
        agents.append(Agent(process, log_path, argv))
        return agents[-1]

    yield start
    for agent in agents:
        if agent.running:
            agent.process.send_signal(signal.SIGTERM)
            try:
                agent.process.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                agent.kill()
    report = getattr(request.node, "report_call", None)
    if report is None or report.failed:
        for number, agent in enumerate(agents):
            print(f"\n----- agent {number}: {' '.join(agent.argv[2:])}\n{agent.log()}")

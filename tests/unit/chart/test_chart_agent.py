"""A node-level rehearsal of the kind suite: the agent runs on the config the chart renders.

values/fake-kind.yaml is rendered, its ConfigMap files are written out, and ``krakenplug run`` starts with
the pod's own arguments. Only the paths the pod gets from hostPath mounts point at a simulated node
(the kubelet simulator's directory and PodResources socket), the way the mounts map them in a cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from chartlib import VALUES_DIR, by_vendor, container

from krakenplug.testing import KubeletSimulator

RESOURCE = "krakenplug.pcl.ac.cn/fake"
WAIT = 30.0


def _node_config(configmap: dict, node_dir: Path, port: int) -> Path:
    """The ConfigMap's files in node_dir, with the mounted paths mapped onto the simulated node."""
    for name, text in configmap["data"].items():
        (node_dir / name).write_text(text)
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    config["plugin"]["device_plugin_dir"] = str(node_dir / "dp")
    config["exporter"]["pod_resources_socket"] = str(node_dir / "pr.sock")
    config["exporter"]["address"] = f"127.0.0.1:{port}"
    config["discovery"]["enabled"] = False  # no API server here; the kind suite covers it
    options = config["backends"]["fake"]
    options["devices_file"] = str(node_dir / Path(options["devices_file"]).name)
    path = node_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class _Agent:
    def __init__(self, args: list[str], node_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRAKENPLUG_")}
        env["NODE_NAME"] = "kind-control-plane"
        self.log_path = node_dir / f"agent-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "krakenplug", *args], stdout=log,
                                            stderr=subprocess.STDOUT, env=env, cwd=node_dir)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=WAIT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def node_dir(short_tmp: Path) -> Path:
    (short_tmp / "dp").mkdir()
    return short_tmp


@pytest.fixture
def kubelet(node_dir: Path) -> Iterator[KubeletSimulator]:
    simulator = KubeletSimulator(node_dir / "dp", pod_resources_socket=node_dir / "pr.sock")
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def agents() -> Iterator[list[_Agent]]:
    started: list[_Agent] = []
    yield started
    for agent in started:
        agent.stop()
        print(f"\n----- agent log (pytest shows it when the test fails)\n{agent.log()}")


def _start(render, values: dict | None, node_dir: Path, port: int, agents: list[_Agent]) -> _Agent:
    objects = render(files=[VALUES_DIR / "fake-kind.yaml"], values=values)
    args = container(by_vendor(objects, "DaemonSet")["fake"])["args"]
    assert args[-2:] == ["--config", "/etc/krakenplug/config.yaml"]
    config = _node_config(by_vendor(objects, "ConfigMap")["fake"], node_dir, port)
    agents.append(_Agent([*args[:-1], str(config)], node_dir))
    return agents[-1]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _wait_for_metrics(port: int, needle: str) -> str:
    deadline = time.monotonic() + WAIT
    text = ""
    while time.monotonic() < deadline:
        try:
            text = _scrape(port)
        except OSError:
            text = ""
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"no {needle!r} in the metrics within {WAIT:.0f}s:\n{text}")


def test_agent_on_the_rendered_config_serves_allocates_and_reports_metrics(render, node_dir, kubelet, agents,
                                                                          free_port) -> None:
    _start(render, None, node_dir, free_port, agents)
    kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)

    response = kubelet.allocate(RESOURCE, 1, pod="device-user", namespace="krakenplug")
    (container_response,) = response.container_responses
    assert container_response.envs["KRAKENPLUG_VISIBLE_DEVICES"] in ("fake-0", "fake-1")
    (device,) = container_response.devices
    assert device.container_path in ("/dev/krakenplug-fake0", "/dev/krakenplug-fake1")

    text = _wait_for_metrics(free_port, 'pod="device-user"')
    util = [line for line in text.splitlines() if line.startswith("krakenplug_device_util{")]
    assert len(util) == 2 and all('vendor="fake"' in line and 'node_name="kind-control-plane"' in line
                                  for line in util)
    assert any('pod="device-user"' in line and 'namespace="krakenplug"' in line for line in util)


def test_upgrading_to_two_replicas_doubles_what_the_agent_advertises(render, node_dir, kubelet, agents,
                                                                    free_port) -> None:
    first = _start(render, None, node_dir, free_port, agents)
    kubelet.wait_for_resource(RESOURCE, capacity=2, allocatable=2, timeout=WAIT)
    assert first.stop() == 0
    # The DaemonSet rolls its pod when the checksum changes; here the new pod is a new process.
    _start(render, {"vendors": {"fake": {"plugin": {"replicas": 2}}}}, node_dir, free_port, agents)
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)

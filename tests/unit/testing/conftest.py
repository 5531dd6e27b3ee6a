"""Fixtures for the kubelet simulator tests: a running simulator and scriptable stub plugins."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from sim_stub_plugin import StubPlugin

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import podresources_v1_pb2_grpc as pr_grpc
from krakenplug.testing import KubeletSimulator


@pytest.fixture
def make_kubelet(short_tmp: Path) -> Iterator[Callable[..., KubeletSimulator]]:
    """Builds and starts simulators on ``short_tmp``; all are stopped at the end of the test."""
    made: list[KubeletSimulator] = []

    def make(**kwargs) -> KubeletSimulator:
        kwargs.setdefault("pod_resources_socket", short_tmp / "pr" / "kubelet.sock")
        simulator = KubeletSimulator(short_tmp, **kwargs)
        simulator.start()
        made.append(simulator)
        return simulator

    yield make
    for simulator in made:
        simulator.stop()


@pytest.fixture
def kubelet(make_kubelet) -> KubeletSimulator:
    return make_kubelet()


@pytest.fixture
def make_plugin(short_tmp: Path) -> Iterator[Callable[..., StubPlugin]]:
    """Starts stub plugins serving ``<short_tmp>/<name>``; all are stopped at the end of the test."""
    made: list[StubPlugin] = []

    def make(devices: list[dp_pb2.Device], *, name: str = "stub.sock", **kwargs) -> StubPlugin:
        plugin = StubPlugin(short_tmp / name, devices, **kwargs).start()
        made.append(plugin)
        return plugin

    yield make
    for plugin in made:
        plugin.stop()


@pytest.fixture
def pod_resources(kubelet: KubeletSimulator) -> Iterator[pr_grpc.PodResourcesListerStub]:
    with grpc.insecure_channel(f"unix://{kubelet.pod_resources_socket}") as channel:
        yield pr_grpc.PodResourcesListerStub(channel)

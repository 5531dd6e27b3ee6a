"""The SR-IOV component with the real Kunlun backend (fake libxpuml without xpumlDeviceSetSriovVfNum, so VFs
go through sysfs and the fake kernel): VFs end up advertised through the hub, an allocated PF is left whole."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sriov_helpers import NODE, RESOURCE

from fakecluster import PodResourcesStandIn  # isort: skip - found through sriov_helpers' path
from fakelib import XPUML, FakeHost, FakeKernel, Fixture, fake_host, fixture_values, make_dev_tree  # isort: skip
from fakelib import make_pci_device, vf_bus_id, xpuml_lists_vfs  # isort: skip

from krakenplug import settings
from krakenplug.backends.kunlun import KunlunBackend, KunlunOptions
from krakenplug.hub import DeviceHub
from krakenplug.sriov import loop

GIB = 1 << 30
BUS0, BUS1 = "0000:3b:00.0", "0000:86:00.0"


@pytest.fixture(scope="module")
def libxpuml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return XPUML.build(tmp_path_factory.mktemp("xpuml"), omit=["xpumlDeviceSetSriovVfNum"])


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    host = fake_host(tmp_path, ["xpu0", "xpu1", "xpu4", "xpu5", "xpuctrl"], {BUS0: 0, BUS1: 1},
                     vendor=0x1D22, device=0x3684)
    make_pci_device(host.sysfs, BUS0, vendor=0x1D22, device=0x3684, numa_node=0, total_vfs=3)
    make_dev_tree(host.dev, ["xpu4", "xpu5"])
    return host


@pytest.fixture
def fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    return XPUML.fixture(tmp_path / "xpuml.fixture", fixture_values([
        {"serial": "K200SN0001", "name": "R200", "bus_id": BUS0, "minor": 0, "memory_total": 16 * GIB}]),
        monkeypatch)


@pytest.fixture
def pod_resources(short_tmp: Path) -> Iterator[PodResourcesStandIn]:
    server = PodResourcesStandIn(short_tmp / "pr.sock").start()
    yield server
    server.stop()


def driver_lists_vfs(fixture: Fixture) -> Callable[[str, list[str]], None]:
    return xpuml_lists_vfs(fixture, BUS0, {vf_bus_id(BUS0, 0): 4, vf_bus_id(BUS0, 1): 5})


def start(libxpuml: Path, host: FakeHost, kernel: FakeKernel, socket: Path) -> tuple[KunlunBackend, DeviceHub]:
    backend = KunlunBackend(KunlunOptions(library_path=str(libxpuml), sriov_num_vfs=2, pod_resources_socket=str(socket),
                                          **host.options), node_name=NODE, sriov_writer=kernel)
    backend.open()
    hub = DeviceHub(backend)
    hub.refresh()
    return backend, hub


def test_the_vfs_are_advertised_instead_of_their_pf(libxpuml: Path, host: FakeHost, fixture: Fixture,
                                                    pod_resources: PodResourcesStandIn, clean_env: None) -> None:
    kernel = FakeKernel(host.sysfs, on_change=driver_lists_vfs(fixture))
    backend, hub = start(libxpuml, host, kernel, pod_resources.socket_path)
    controller = loop.build(settings.load(overrides={"node_name": NODE}), hub, backend)
    try:
        assert [d.id for d in hub.snapshot().devices] == ["K200SN0001"]
        assert controller.reconcile() is True
        devices = hub.snapshot().devices  # re-read by the component right after the change
    finally:
        controller.close()
        backend.close()

    assert kernel.writes == [(BUS0, "2")]
    assert [(d.id, d.model, d.device_nodes[0].container_path, d.resource) for d in devices] == [
        (vf_bus_id(BUS0, 0), "R200-VF-8G", "/dev/xpu4", RESOURCE), (vf_bus_id(BUS0, 1), "R200-VF-8G", "/dev/xpu5",
                                                                    RESOURCE)]


def test_an_allocated_pf_is_not_split(libxpuml: Path, host: FakeHost, fixture: Fixture,
                                      pod_resources: PodResourcesStandIn, clean_env: None) -> None:
    kernel = FakeKernel(host.sysfs, on_change=driver_lists_vfs(fixture))
    pod_resources.allocations[("trainer", RESOURCE)] = ["K200SN0001"]
    backend, hub = start(libxpuml, host, kernel, pod_resources.socket_path)
    controller = loop.build(settings.load(overrides={"node_name": NODE}), hub, backend)
    try:
        assert controller.reconcile() is False
    finally:
        controller.close()
        backend.close()

    assert kernel.writes == [] and [d.id for d in hub.snapshot().devices] == ["K200SN0001"]

"""Fixtures for the SR-IOV component: a fake sysfs with a fake kernel, the API server and PodResources stand-ins.

The stand-ins and fake host trees are the backend tests' own (tests/unit/backends/fakelib.py, fakecluster.py),
imported from there rather than copied (sriov_helpers puts that directory on the path).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sriov_helpers import NODE, PF0, PF1, VENDOR

from fakecluster import KubeApiStandIn, PodResourcesStandIn  # isort: skip - found through sriov_helpers' path
from fakelib import FakeKernel, make_pci_device  # isort: skip


@pytest.fixture(autouse=True)
def _no_cluster_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only a kubeconfig a test writes points at an API server."""
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """Two Kunlun PFs with 3 VFs each, and another vendor's PF that is none of ours."""
    root = tmp_path / "sys"
    for numa_node, bus_id in enumerate((PF0, PF1)):
        make_pci_device(root, bus_id, vendor=VENDOR, device=0x3684, numa_node=numa_node, total_vfs=3)
    make_pci_device(root, "0000:01:00.0", vendor=0x10DE, device=0x2330, total_vfs=8)
    return root


@pytest.fixture
def kernel(sysfs: Path) -> FakeKernel:
    return FakeKernel(sysfs)


@pytest.fixture
def kube() -> Iterator[KubeApiStandIn]:
    api = KubeApiStandIn(NODE).start()
    yield api
    api.stop()


@pytest.fixture
def pod_resources(short_tmp: Path) -> Iterator[PodResourcesStandIn]:
    server = PodResourcesStandIn(short_tmp / "pr.sock").start()
    yield server
    server.stop()

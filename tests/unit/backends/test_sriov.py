"""The vendor-neutral SR-IOV code against a fake sysfs with a fake kernel, a Kubernetes API stand-in and a
PodResources stand-in (no monkeypatching of the code under test)."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest
from fakecluster import KubeApiStandIn, PodResourcesStandIn
from fakelib import FakeKernel, make_pci_device, pci_dir, vf_bus_id

from krakenplug.backends import _nodelabels, _sriov

VENDOR = 0x1D22
NODE = "node-a"
PF0, PF1 = "0000:3b:00.0", "0000:86:00.0"
LABEL = "baidu.com/sriov-num-vfs"


@pytest.fixture(autouse=True)
def _no_in_cluster_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    make_pci_device(root, PF0, vendor=VENDOR, device=0x3684, numa_node=0, total_vfs=3)
    make_pci_device(root, PF1, vendor=VENDOR, device=0x3684, numa_node=1, total_vfs=3)
    make_pci_device(root, "0000:01:00.0", vendor=0x10DE, device=0x2330, total_vfs=8)  # someone else's PF
    make_pci_device(root, "0000:02:00.0", vendor=VENDOR, device=0x3684)  # not SR-IOV capable
    return root


@pytest.fixture
def kernel(sysfs: Path) -> FakeKernel:
    return FakeKernel(sysfs)


@pytest.fixture
def kube(tmp_path: Path):
    api = KubeApiStandIn(NODE).start()
    yield api
    api.stop()


@pytest.fixture
def pod_resources(short_tmp: Path):
    server = PodResourcesStandIn(short_tmp / "pr.sock").start()
    yield server
    server.stop()


def controller(sysfs: Path, kernel: FakeKernel, *, node_api: _nodelabels.NodeApi | None = None,
               **options: object) -> _sriov.SriovController:
    return _sriov.SriovController(
        _sriov.SriovOptions(**options), sysfs_root=str(sysfs), node_name=NODE, vendor=VENDOR,
        advertised_ids=lambda pf: {pf.bus_id, *pf.vf_bus_ids}, writer=kernel, node_api=node_api,
    )


def num_vfs(sysfs: Path, bus_id: str) -> int:
    return int((pci_dir(sysfs, bus_id) / "sriov_numvfs").read_text())


# -- sysfs -----------------------------------------------------------------------------------------


def test_physical_functions_are_found_by_vendor_and_need_sriov_totalvfs(sysfs: Path, kernel: FakeKernel) -> None:
    kernel(str(pci_dir(sysfs, PF0) / "sriov_numvfs"), "2")

    found = _sriov.find_physical_functions(str(sysfs), vendor=VENDOR)

    assert [(pf.bus_id, pf.total_vfs, pf.num_vfs) for pf in found] == [(PF0, 3, 2), (PF1, 3, 0)]
    assert found[0].vf_bus_ids == (vf_bus_id(PF0, 0), vf_bus_id(PF0, 1))
    assert _sriov.physical_function_of(str(sysfs), vf_bus_id(PF0, 1)) == PF0
    assert _sriov.physical_function_of(str(sysfs), PF0) is None
    assert _sriov.find_physical_functions(str(sysfs), vendor=VENDOR, device_ids={0x9999}) == []


def test_changing_the_count_writes_zero_first_then_waits_for_the_vfs(sysfs: Path, kernel: FakeKernel) -> None:
    pf = _sriov.read_physical_function(str(sysfs), PF0)
    pf = _sriov.set_vf_count(pf, 2, sysfs_root=str(sysfs), writer=kernel, wait_seconds=5)
    assert pf.num_vfs == 2 and len(pf.vf_bus_ids) == 2

    pf = _sriov.set_vf_count(pf, 3, sysfs_root=str(sysfs), writer=kernel, wait_seconds=5)

    assert kernel.writes == [(PF0, "2"), (PF0, "0"), (PF0, "3")]
    assert pf.vf_bus_ids == tuple(vf_bus_id(PF0, i) for i in range(3))


def test_the_fake_kernel_refuses_n_to_m_without_zero_like_the_real_one(sysfs: Path, kernel: FakeKernel) -> None:
    path = str(pci_dir(sysfs, PF0) / "sriov_numvfs")
    kernel(path, "1")
    with pytest.raises(OSError) as busy:
        kernel(path, "2")
    with pytest.raises(OSError) as out_of_range:
        kernel(path, "4")
    assert (busy.value.errno, out_of_range.value.errno) == (errno.EBUSY, errno.ERANGE)


def test_a_driver_that_refuses_the_enable_is_reported_and_the_old_count_restored(sysfs: Path,
                                                                                 kernel: FakeKernel) -> None:
    kernel(str(pci_dir(sysfs, PF0) / "sriov_numvfs"), "1")
    kernel.errors[(PF0, 3)] = errno.ENOMEM
    pf = _sriov.read_physical_function(str(sysfs), PF0)

    with pytest.raises(_sriov.SriovError, match=r"writing 3 .* ENOMEM.*restored the previous 1 VFs"):
        _sriov.set_vf_count(pf, 3, sysfs_root=str(sysfs), writer=kernel, wait_seconds=1)

    assert num_vfs(sysfs, PF0) == 1


def test_a_pf_without_sysfs_sriov_support_gets_a_hint(sysfs: Path, kernel: FakeKernel) -> None:
    kernel.errors[(PF0, 2)] = errno.ENOENT
    pf = _sriov.read_physical_function(str(sysfs), PF0)
    with pytest.raises(_sriov.SriovError, match="does not support SR-IOV configuration through sysfs"):
        _sriov.set_vf_count(pf, 2, sysfs_root=str(sysfs), writer=kernel, wait_seconds=1)


def test_vfs_that_never_appear_end_the_wait_with_an_error(sysfs: Path) -> None:
    def kernel_without_vfs(path: str, value: str) -> None:
        Path(path).write_text(value)

    pf = _sriov.read_physical_function(str(sysfs), PF0)
    with pytest.raises(_sriov.SriovError, match="0 of 2 VFs appeared within 0.2 s"):
        _sriov.set_vf_count(pf, 2, sysfs_root=str(sysfs), writer=kernel_without_vfs, wait_seconds=0.2)


def test_the_production_writer_writes_the_value(tmp_path: Path) -> None:
    target = tmp_path / "sriov_numvfs"
    _sriov.write_sysfs(str(target), "3")
    assert target.read_text() == "3"


# -- the wanted count ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [("2", 2), (" 3 ", 3), (0, 0), ("0", 0)], ids=["text", "spaces", "int", "0"])
def test_vf_counts_that_are_accepted(raw: object, expected: int) -> None:
    assert _sriov.parse_vf_count(raw, source="node label x") == expected


@pytest.mark.parametrize("raw", ["abc", "-1", 1.5, True, None, "2.0", ""],
                         ids=["word", "negative", "float", "bool", "none", "decimal", "empty"])
def test_vf_counts_that_are_rejected_name_the_source_and_value(raw: object) -> None:
    with pytest.raises(_sriov.SriovRejected) as rejected:
        _sriov.parse_vf_count(raw, source="node label baidu.com/sriov-num-vfs")
    assert "node label baidu.com/sriov-num-vfs" in str(rejected.value)
    assert repr(raw) in str(rejected.value)


def test_the_config_file_entry_for_this_node_beats_its_default(tmp_path: Path) -> None:
    path = tmp_path / "sriov.yaml"
    path.write_text("defaultNumVfs: 1\nnodes:\n  node-a: 3\n  node-b: 2\n")
    assert _sriov.count_from_config_file(path, "node-a") == _sriov.WantedVfs(3, f"SR-IOV config file {path} "
                                                                              "nodes.node-a")
    assert _sriov.count_from_config_file(path, "node-c").count == 1
    assert _sriov.count_from_config_file(tmp_path / "absent.yaml", "node-a").count is None


@pytest.mark.parametrize("text, problem", [
    ("defaultNumVfs: many\n", "defaultNumVfs: VF count must be a non-negative integer, got 'many'"),
    ("nodes: [a, b]\n", "nodes must map node names to counts"),
    ("numVfs: 2\n", "expected keys defaultNumVfs and nodes"),
    ("nodes: {node-a: -2}\n", "nodes.node-a: VF count must not be negative, got -2"),
    ("nodes: {node-a: [\n", "cannot read"),
], ids=["word", "nodes-list", "unknown-key", "negative", "bad-yaml"])
def test_a_malformed_config_file_is_rejected_naming_the_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "sriov.yaml"
    path.write_text(text)
    with pytest.raises(_sriov.SriovRejected) as rejected:
        _sriov.count_from_config_file(path, "node-a")
    assert str(path) in str(rejected.value) and problem in str(rejected.value)


def test_the_label_beats_the_file_which_beats_the_option(tmp_path: Path, sysfs: Path, kernel: FakeKernel,
                                                          kube: KubeApiStandIn) -> None:
    config = tmp_path / "sriov.yaml"
    config.write_text("defaultNumVfs: 2\n")
    node_api = _nodelabels.NodeApi(NODE, kubeconfig=str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    sriov = controller(sysfs, kernel, node_api=node_api, sriov_num_vfs=1, sriov_config_file=config,
                       sriov_node_label=LABEL)
    try:
        assert sriov.wanted() == _sriov.WantedVfs(2, f"SR-IOV config file {config} defaultNumVfs")
        kube.set_label(LABEL, "3")
        node_api.label(LABEL)  # re-read; in the backend the watch does this
        assert sriov.wanted() == _sriov.WantedVfs(3, f"node label {LABEL}")
        config.unlink()
        kube.set_label(LABEL, None)
        node_api.label(LABEL)
        assert sriov.wanted() == _sriov.WantedVfs(1, "option sriov_num_vfs")
    finally:
        sriov.close()


def test_without_cluster_config_the_label_is_unset_and_other_sources_apply(
        sysfs: Path, kernel: FakeKernel, pod_resources: PodResourcesStandIn, caplog: pytest.LogCaptureFixture) -> None:
    sriov = controller(sysfs, kernel, sriov_node_label=LABEL, sriov_num_vfs=2,
                       pod_resources_socket=str(pod_resources.socket_path))

    assert sriov.reconcile() is True

    assert (num_vfs(sysfs, PF0), num_vfs(sysfs, PF1)) == (2, 2)
    assert sum("no Kubernetes API access" in record.message for record in caplog.records) == 1


def test_nothing_changes_when_no_source_sets_a_count(sysfs: Path, kernel: FakeKernel) -> None:
    kernel(str(pci_dir(sysfs, PF0) / "sriov_numvfs"), "2")
    kernel.writes.clear()

    assert controller(sysfs, kernel, sriov_node_label=LABEL).reconcile() is False
    assert kernel.writes == [] and num_vfs(sysfs, PF0) == 2


# -- rejections and refusals -----------------------------------------------------------------------


def test_a_bad_label_is_rejected_with_an_event_and_the_vfs_stay(tmp_path: Path, sysfs: Path, kernel: FakeKernel,
                                                                kube: KubeApiStandIn,
                                                                pod_resources: PodResourcesStandIn) -> None:
    kube.set_label(LABEL, "lots")
    node_api = _nodelabels.NodeApi(NODE, kubeconfig=str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    sriov = controller(sysfs, kernel, node_api=node_api, sriov_node_label=LABEL, sriov_num_vfs=1,
                       pod_resources_socket=str(pod_resources.socket_path))
    try:
        assert sriov.reconcile() is False
        assert sriov.reconcile() is False  # the same problem is reported once
    finally:
        sriov.close()

    assert kernel.writes == []
    assert kube.event_reasons() == ["SriovConfigRejected"]
    event = kube.events[0]
    assert f"node label {LABEL}" in event["message"] and "'lots'" in event["message"]
    assert event["involvedObject"] == {"kind": "Node", "name": NODE, "uid": NODE, "apiVersion": "v1"}
    assert event["type"] == "Warning"


def test_a_count_above_sriov_totalvfs_is_rejected(sysfs: Path, kernel: FakeKernel,
                                                  pod_resources: PodResourcesStandIn,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    sriov = controller(sysfs, kernel, sriov_num_vfs=4, pod_resources_socket=str(pod_resources.socket_path))

    assert sriov.reconcile() is False

    assert kernel.writes == []
    assert f"option sriov_num_vfs: 4 VFs asked for, but {PF0} supports at most 3 (sriov_totalvfs)" in caplog.text


def test_vfs_allocated_to_a_pod_are_never_changed_until_the_pod_is_gone(
        tmp_path: Path, sysfs: Path, kernel: FakeKernel, kube: KubeApiStandIn,
        pod_resources: PodResourcesStandIn) -> None:
    kernel(str(pci_dir(sysfs, PF0) / "sriov_numvfs"), "2")
    kernel.writes.clear()
    pod_resources.allocations[("trainer", "baidu.com/xpu")] = [f"{vf_bus_id(PF0, 1)}::2"]  # a time-sliced replica
    node_api = _nodelabels.NodeApi(NODE, kubeconfig=str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    sriov = controller(sysfs, kernel, node_api=node_api, sriov_num_vfs=3,
                       pod_resources_socket=str(pod_resources.socket_path))
    try:
        assert sriov.reconcile() is True  # PF1 is free and changes
        assert (num_vfs(sysfs, PF0), num_vfs(sysfs, PF1)) == (2, 3)
        assert kube.event_reasons() == ["SriovChangeDeferred", "SriovConfigured"]
        assert vf_bus_id(PF0, 1) in kube.events[0]["message"]

        pod_resources.allocations.clear()
        assert sriov.reconcile() is True
    finally:
        sriov.close()

    assert num_vfs(sysfs, PF0) == 3
    assert kernel.writes[-2:] == [(PF0, "0"), (PF0, "3")]


def test_without_the_pod_resources_api_nothing_is_changed(sysfs: Path, kernel: FakeKernel, short_tmp: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    sriov = controller(sysfs, kernel, sriov_num_vfs=2, pod_resources_socket=str(short_tmp / "missing.sock"))

    assert sriov.reconcile() is False

    assert kernel.writes == []
    assert "cannot tell whether its devices are in use" in caplog.text


# -- the label watch -------------------------------------------------------------------------------


def test_a_label_change_is_seen_through_the_watch(tmp_path: Path, sysfs: Path, kernel: FakeKernel,
                                                  kube: KubeApiStandIn) -> None:
    node_api = _nodelabels.NodeApi(NODE, kubeconfig=str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    sriov = controller(sysfs, kernel, node_api=node_api, sriov_node_label=LABEL)
    stop, woken = threading.Event(), threading.Event()
    watcher = threading.Thread(target=sriov.watch_label, args=(stop, woken.set))
    watcher.start()
    try:
        _wait_for(lambda: kube.watches >= 1)
        kube.set_label(LABEL, "2")
        assert woken.wait(10)
        assert node_api.label(LABEL, refresh=False) == "2"
    finally:
        stop.set()
        watcher.join(10)
        sriov.close()
    assert not watcher.is_alive()


def test_an_unreachable_api_server_keeps_the_last_label_value(tmp_path: Path) -> None:
    kube = KubeApiStandIn(NODE, {LABEL: "2"}).start()
    kubeconfig = str(kube.write_kubeconfig(tmp_path / "kubeconfig"))
    node_api = _nodelabels.NodeApi(NODE, kubeconfig=kubeconfig, timeout_seconds=2)
    never_read = _nodelabels.NodeApi(NODE, kubeconfig=kubeconfig, timeout_seconds=2)
    try:
        assert node_api.label(LABEL) == "2"
        kube.stop()
        assert node_api.label(LABEL) == "2"
        with pytest.raises(_nodelabels.LabelUnknown, match=f"cannot read node {NODE}"):
            never_read.label(LABEL)
    finally:
        node_api.close()
        never_read.close()


def _wait_for(condition, timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        done.wait(0.02)
    raise AssertionError("condition not met in time")

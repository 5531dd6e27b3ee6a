"""The SR-IOV component against a fake sysfs with a fake kernel, the Kubernetes API stand-in and the
PodResources stand-in, through the device hub (no monkeypatching of the code under test)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from sriov_helpers import LABEL, NODE, PF0, PF1, RESOURCE, SysfsSriovBackend, num_vfs

from fakecluster import KubeApiStandIn, PodResourcesStandIn  # isort: skip - found through sriov_helpers' path
from fakelib import FakeKernel, pci_dir, vf_bus_id  # isort: skip

from krakenplug import replica_ids, settings, sriov
from krakenplug.backends import base
from krakenplug.cluster import config as cluster_config
from krakenplug.cluster import nodes
from krakenplug.hub import DeviceHub
from krakenplug.sriov import loop, wanted
from krakenplug.sriov.controller import LabelUnknown, NodeLabel, SriovController

LONG_ID = "XPU-" + "0123456789abcdef" * 3 + "0123456789"  # 62 characters: replicas get hashed IDs


def agent_settings(**overrides: object) -> settings.Settings:
    return settings.load(overrides={"node_name": NODE, "backend": "fake", **overrides})


def make(sysfs: Path, kernel: FakeKernel, *, ids: dict[str, str] | None = None,
         **options: object) -> tuple[SriovController, DeviceHub, SysfsSriovBackend]:
    backend = SysfsSriovBackend(sysfs, kernel, base.SriovOptions(**options), ids)
    hub = DeviceHub(backend)
    hub.refresh()
    return loop.build(agent_settings(), hub, backend), hub, backend


# -- the wanted count ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [("2", 2), (" 3 ", 3), (0, 0), ("0", 0)], ids=["text", "spaces", "int", "0"])
def test_vf_counts_that_are_accepted(raw: object, expected: int) -> None:
    assert wanted.parse_vf_count(raw, source="node label x") == expected


@pytest.mark.parametrize("raw", ["abc", "-1", 1.5, True, None, "2.0", ""],
                         ids=["word", "negative", "float", "bool", "none", "decimal", "empty"])
def test_vf_counts_that_are_rejected_name_the_source_and_value(raw: object) -> None:
    with pytest.raises(wanted.SriovRejected) as rejected:
        wanted.parse_vf_count(raw, source="node label baidu.com/sriov-num-vfs")
    assert "node label baidu.com/sriov-num-vfs" in str(rejected.value)
    assert repr(raw) in str(rejected.value)


def test_the_config_file_entry_for_this_node_beats_its_default(tmp_path: Path) -> None:
    path = tmp_path / "sriov.yaml"
    path.write_text("defaultNumVfs: 1\nnodes:\n  node-a: 3\n  node-b: 2\n")
    assert wanted.count_from_config_file(path, "node-a") == wanted.WantedVfs(3, f"SR-IOV config file {path} "
                                                                              "nodes.node-a")
    assert wanted.count_from_config_file(path, "node-c").count == 1
    assert wanted.count_from_config_file(tmp_path / "absent.yaml", "node-a").count is None


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
    with pytest.raises(wanted.SriovRejected) as rejected:
        wanted.count_from_config_file(path, "node-a")
    assert str(path) in str(rejected.value) and problem in str(rejected.value)


def test_the_label_beats_the_file_which_beats_the_option(tmp_path: Path, sysfs: Path, kernel: FakeKernel,
                                                          kube: KubeApiStandIn, clean_env: None) -> None:
    config = tmp_path / "sriov.yaml"
    config.write_text("defaultNumVfs: 2\n")
    sriov_controller, _, _ = make(sysfs, kernel, sriov_num_vfs=1, sriov_config_file=config, sriov_node_label=LABEL,
                                  sriov_watch_label=False,
                                  kubeconfig=str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        assert sriov_controller.wanted() == wanted.WantedVfs(2, f"SR-IOV config file {config} defaultNumVfs")
        kube.set_label(LABEL, "3")
        assert sriov_controller.wanted() == wanted.WantedVfs(3, f"node label {LABEL}")
        config.unlink()
        kube.set_label(LABEL, None)
        assert sriov_controller.wanted() == wanted.WantedVfs(1, "option sriov_num_vfs")
    finally:
        sriov_controller.close()


def test_without_cluster_config_the_label_is_unset_and_other_sources_apply(
        sysfs: Path, kernel: FakeKernel, pod_resources: PodResourcesStandIn, caplog: pytest.LogCaptureFixture,
        clean_env: None) -> None:
    sriov_controller, hub, _ = make(sysfs, kernel, sriov_node_label=LABEL, sriov_num_vfs=2,
                                    pod_resources_socket=str(pod_resources.socket_path))

    assert sriov_controller.reconcile() is True

    assert (num_vfs(sysfs, PF0), num_vfs(sysfs, PF1)) == (2, 2)
    assert sum("no Kubernetes API access" in record.message for record in caplog.records) == 1
    # The hub re-read the backend at once: every component sees the VFs now.
    assert sorted(device.id for device in hub.snapshot().devices) == sorted(
        vf_bus_id(pf, k) for pf in (PF0, PF1) for k in range(2))


def test_nothing_changes_when_no_source_sets_a_count(sysfs: Path, kernel: FakeKernel, clean_env: None) -> None:
    kernel(str(pci_dir(sysfs, PF0) / "sriov_numvfs"), "2")
    kernel.writes.clear()

    sriov_controller, _, _ = make(sysfs, kernel, sriov_node_label=LABEL)

    assert sriov_controller.reconcile() is False
    assert kernel.writes == [] and num_vfs(sysfs, PF0) == 2


# -- rejections and refusals -----------------------------------------------------------------------


def test_a_bad_label_is_rejected_with_an_event_and_the_vfs_stay(tmp_path: Path, sysfs: Path, kernel: FakeKernel,
                                                                kube: KubeApiStandIn,
                                                                pod_resources: PodResourcesStandIn,
                                                                clean_env: None) -> None:
    kube.set_label(LABEL, "lots")
    sriov_controller, _, _ = make(sysfs, kernel, sriov_node_label=LABEL, sriov_num_vfs=1,
                                  kubeconfig=str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
                                  pod_resources_socket=str(pod_resources.socket_path))
    try:
        assert sriov_controller.reconcile() is False
        assert sriov_controller.reconcile() is False  # the same problem is reported once
    finally:
        sriov_controller.close()

    assert kernel.writes == []
    assert kube.event_reasons() == ["SriovConfigRejected"]
    event = kube.events[0]
    assert f"node label {LABEL}" in event["message"] and "'lots'" in event["message"]
    assert event["involvedObject"] == {"kind": "Node", "name": NODE, "uid": NODE, "apiVersion": "v1"}
    assert event["type"] == "Warning"


def test_a_count_above_sriov_totalvfs_is_rejected(sysfs: Path, kernel: FakeKernel,
                                                  pod_resources: PodResourcesStandIn,
                                                  caplog: pytest.LogCaptureFixture, clean_env: None) -> None:
    sriov_controller, _, _ = make(sysfs, kernel, sriov_num_vfs=4, pod_resources_socket=str(pod_resources.socket_path))

    assert sriov_controller.reconcile() is False

    assert kernel.writes == []
    assert f"option sriov_num_vfs: 4 VFs asked for, but {PF0} supports at most 3 (sriov_totalvfs)" in caplog.text


def test_vfs_allocated_to_a_pod_are_never_changed_until_the_pod_is_gone(
        tmp_path: Path, sysfs: Path, kernel: FakeKernel, kube: KubeApiStandIn,
        pod_resources: PodResourcesStandIn, clean_env: None) -> None:
    kernel(str(pci_dir(sysfs, PF0) / "sriov_numvfs"), "2")
    kernel.writes.clear()
    pod_resources.allocations[("trainer", RESOURCE)] = [f"{vf_bus_id(PF0, 1)}::2"]  # a time-sliced replica
    sriov_controller, _, _ = make(sysfs, kernel, sriov_num_vfs=3,
                                  kubeconfig=str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
                                  pod_resources_socket=str(pod_resources.socket_path))
    try:
        assert sriov_controller.reconcile() is True  # PF1 is free and changes
        assert (num_vfs(sysfs, PF0), num_vfs(sysfs, PF1)) == (2, 3)
        assert kube.event_reasons() == ["SriovChangeDeferred", "SriovConfigured"]
        assert vf_bus_id(PF0, 1) in kube.events[0]["message"]

        pod_resources.allocations.clear()
        assert sriov_controller.reconcile() is True
    finally:
        sriov_controller.close()

    assert num_vfs(sysfs, PF0) == 3
    assert kernel.writes[-2:] == [(PF0, "0"), (PF0, "3")]


def test_a_hashed_replica_id_held_by_a_pod_is_recognised(sysfs: Path, kernel: FakeKernel,
                                                         pod_resources: PodResourcesStandIn,
                                                         caplog: pytest.LogCaptureFixture, clean_env: None) -> None:
    # PF0 is advertised under a 62-character ID; with replicas: 2 the kubelet holds a hashed replica ID.
    held = replica_ids.replica_ids(LONG_ID, 2)[1]
    assert not held.startswith(LONG_ID)
    pod_resources.allocations[("trainer", RESOURCE)] = [held]
    sriov_controller, _, _ = make(sysfs, kernel, ids={PF0: LONG_ID}, sriov_num_vfs=2,
                                  pod_resources_socket=str(pod_resources.socket_path))

    assert sriov_controller.reconcile() is True  # PF1 changes, PF0 is in use

    assert (num_vfs(sysfs, PF0), num_vfs(sysfs, PF1)) == (0, 2)
    assert f"allocated to pods: {LONG_ID}" in caplog.text


def test_without_the_pod_resources_api_nothing_is_changed(sysfs: Path, kernel: FakeKernel, short_tmp: Path,
                                                          caplog: pytest.LogCaptureFixture, clean_env: None) -> None:
    sriov_controller, _, _ = make(sysfs, kernel, sriov_num_vfs=2,
                                  pod_resources_socket=str(short_tmp / "missing.sock"))

    assert sriov_controller.reconcile() is False

    assert kernel.writes == []
    assert "cannot tell whether its devices are in use" in caplog.text


# -- the label: watched, and kept while the API server is away -------------------------------------


def test_the_component_applies_a_label_change_seen_through_the_watch(
        tmp_path: Path, sysfs: Path, kernel: FakeKernel, kube: KubeApiStandIn, pod_resources: PodResourcesStandIn,
        clean_env: None) -> None:
    options = base.SriovOptions(sriov_node_label=LABEL, kubeconfig=str(kube.write_kubeconfig(tmp_path / "kc")),
                                pod_resources_socket=str(pod_resources.socket_path))
    backend = SysfsSriovBackend(sysfs, kernel, options)
    hub = DeviceHub(backend, poll_seconds=3600)  # only the watch can wake the component in time
    stop = threading.Event()
    hub.start(stop)
    component = threading.Thread(target=sriov.run, args=(agent_settings(), hub, stop))
    component.start()
    try:
        _wait_for(lambda: kube.watches >= 1)
        kube.set_label(LABEL, "2")
        _wait_for(lambda: (num_vfs(sysfs, PF0), num_vfs(sysfs, PF1)) == (2, 2))
        _wait_for(lambda: len(hub.snapshot().devices) == 4)
    finally:
        stop.set()
        component.join(10)
        hub.join()
    assert not component.is_alive()
    assert kube.event_reasons() == ["SriovConfigured", "SriovConfigured"]


def test_an_unreachable_api_server_keeps_the_last_label_value(tmp_path: Path) -> None:
    kube = KubeApiStandIn(NODE, {LABEL: "2"}).start()
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")

    def label() -> NodeLabel:
        client = nodes.NodeClient(cluster_config.connect(kubeconfig), NODE, timeout_seconds=2)
        return NodeLabel(client, LABEL, watch=False)

    read_before, never_read = label(), label()
    try:
        assert read_before.value() == "2"
        kube.stop()
        assert read_before.value() == "2"
        with pytest.raises(LabelUnknown, match="cannot read node labels"):
            never_read.value()
    finally:
        read_before.close()
        never_read.close()


def test_a_backend_without_sriov_ends_the_component_at_once(clean_env: None, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from krakenplug.backends import fake

    devices = tmp_path / "devices.yaml"
    devices.write_text("devices: []\n")
    caplog.set_level(logging.DEBUG, logger="krakenplug.sriov")
    hub = DeviceHub(fake.FakeBackend(fake.FakeOptions(devices_file=devices)))
    sriov.run(agent_settings(), hub, threading.Event())
    assert "does not manage SR-IOV" in caplog.text


def _wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        done.wait(0.02)
    raise AssertionError("condition not met in time")


def test_a_failing_backend_never_stops_the_component(sysfs: Path, kernel: FakeKernel,
                                                     pod_resources: PodResourcesStandIn,
                                                     caplog: pytest.LogCaptureFixture, clean_env: None) -> None:
    class Flaky(SysfsSriovBackend):
        broken = True

        def physical_functions(self):  # type: ignore[no-untyped-def]
            if self.broken:
                raise OSError(5, "Input/output error", "/sys/bus/pci/devices")
            return super().physical_functions()

    caplog.set_level(logging.INFO, logger="krakenplug.sriov")
    backend = Flaky(sysfs, kernel, base.SriovOptions(sriov_num_vfs=1,
                                                     pod_resources_socket=str(pod_resources.socket_path)))
    hub = DeviceHub(backend, poll_seconds=0.05)
    stop = threading.Event()
    component = threading.Thread(target=sriov.run, args=(agent_settings(), hub, stop))
    component.start()
    try:
        _wait_for(lambda: "SR-IOV reconcile failed" in caplog.text)
        assert component.is_alive()
        backend.broken = False
        _wait_for(lambda: (num_vfs(sysfs, PF0), num_vfs(sysfs, PF1)) == (1, 1))
    finally:
        stop.set()
        component.join(10)
    assert caplog.text.count("SR-IOV reconcile failed") == 1 and "SR-IOV reconcile works again" in caplog.text

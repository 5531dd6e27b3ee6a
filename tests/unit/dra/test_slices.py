"""Slice content and publishing rules: names, versions, limits and splitting, adoption, stale slices, retries."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from krakenplug import errors
from krakenplug import resource_names as names
from krakenplug.backends import base
from krakenplug.dra import slices
from krakenplug.testing.dra_api import slice_problems

from .conftest import DRIVER, NODE, Node, device_specs


def _device(index: int, **fields: object) -> base.Device:
    values: dict[str, object] = {"id": f"dev-{index}", "index": index, "vendor": "fake", "model": "M",
                                 "memory_total_mb": 1024, "resource": "r", **fields}
    return base.Device(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [("fake-0", "fake-0"), ("GPU-1a2b", "gpu-1a2b")])
def test_device_names_keep_readable_ids(text: str, expected: str) -> None:
    assert names.dns_label(text) == expected


@pytest.mark.parametrize("text", ["0000:3b:00.0", "a_b", "x" * 80, "-lead", "MIG/1g.10gb/0"])
def test_device_names_are_dns_labels_and_distinct(text: str) -> None:
    label = names.dns_label(text)
    assert len(label) <= 63 and label == label.lower()
    assert slice_problems({"metadata": {"name": "s"}, "spec": {
        "driver": DRIVER, "nodeName": NODE, "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1},
        "devices": [{"name": label}]}}) == []
    assert names.dns_label(text) != names.dns_label(text + "x")


def test_slice_names_fit_a_subdomain() -> None:
    long = names.slice_name("n" * 250, DRIVER, 3)
    assert len(long) <= 253 and long.endswith("-3") and long != names.slice_name("n" * 249 + "m", DRIVER, 3)


@pytest.mark.parametrize(("raw", "expected"), [("535.104.05", "535.104.5"), ("23.0", "23.0.0"), ("7", "7.0.0"),
                                               ("fake-1.0", None), ("1.2.3.4", "1.2.3"), (None, None)])
def test_driver_versions_become_semver_where_numeric(raw: str | None, expected: str | None) -> None:
    assert slices.semver(raw) == expected


def test_quantities_are_written_as_the_server_writes_them_back() -> None:
    assert [slices.quantity_mb(v) for v in (0, 81920, 1536, 1 << 20)] == ["0", "80Gi", "1536Mi", "1Ti"]


def test_many_devices_split_into_slices_the_api_accepts() -> None:
    devices = [_device(i) for i in range(300)]
    pool = slices.build_pool(devices, driver=DRIVER, node=NODE, generation=4)
    assert [len(s["devices"]) for s in pool.slices] == [128, 128, 44]
    tainted = [_device(i, health=base.Health.UNHEALTHY, health_reason="XID 48: double-bit ECC") if i == 7
               else _device(i) for i in range(300)]
    tainted_pool = slices.build_pool(tainted, driver=DRIVER, node=NODE, generation=4)
    assert max(len(s["devices"]) for s in tainted_pool.slices) == 64
    for obj in pool.objects() + tainted_pool.objects():
        assert obj["spec"]["pool"] == {"name": NODE, "generation": 4, "resourceSliceCount": len(obj["spec"]["pool"]) and
                                       obj["spec"]["pool"]["resourceSliceCount"]}
        assert slice_problems(obj) == [], obj["metadata"]["name"]


def test_long_strings_are_cut_to_the_api_limit() -> None:
    entry = slices.device_entry(_device(0, model="M" * 200), driver_version="v" * 100, pcie_root=None)
    assert all(len(v.get("string", "")) <= 64 for v in entry["attributes"].values())


def test_pcie_root_comes_from_sysfs(node: Node, run_driver) -> None:
    sys = node.root / "sys"
    target = sys / "devices" / "pci0000:3a" / "0000:3a:00.0" / "0000:3b:00.0"
    target.mkdir(parents=True)
    (sys / "bus" / "pci" / "devices").mkdir(parents=True)
    os.symlink(os.path.relpath(target, sys / "bus" / "pci" / "devices"), sys / "bus" / "pci" / "devices" / "0000:3b:00.0")
    run_driver(node)
    published = node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4 and api.slice_devices(driver=DRIVER))
    assert published["fake-0"]["attributes"]["resource.kubernetes.io/pcieRoot"] == {"string": "pci0000:3a"}
    assert "resource.kubernetes.io/pcieRoot" not in published["fake-1"]["attributes"]


def test_small_slices_setting_splits_and_shrinking_deletes_the_extra_slice(node: Node, run_driver) -> None:
    run_driver(node, max_devices_per_slice=3)
    node.api.wait_for(lambda api: len(api.slices(driver=DRIVER)) == 2)
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in node.api.slices(driver=DRIVER)} == {2}
    node.devices.write(device_specs(2))
    node.api.wait_for(lambda api: len(api.slices(driver=DRIVER)) == 1 and len(api.slice_devices(driver=DRIVER)) == 2)
    (only,) = node.api.slices(driver=DRIVER)
    assert only["spec"]["pool"]["resourceSliceCount"] == 1 and only["spec"]["pool"]["generation"] == 2


def test_restart_adopts_equal_slices_without_writing_and_removes_stale_ones(node: Node, run_driver) -> None:
    stale = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "old-layout-7"},
             "spec": {"driver": DRIVER, "nodeName": NODE, "devices": [],
                      "pool": {"name": NODE, "generation": 9, "resourceSliceCount": 2}}}
    node.api.put_slice(stale)
    someone_else = {**stale, "metadata": {"name": "other-node"},
                    "spec": {**stale["spec"], "nodeName": "node-b", "pool": {**stale["spec"]["pool"], "name": "node-b"}}}
    node.api.put_slice(someone_else)
    stop = run_driver(node)
    node.api.wait_for(lambda api: "old-layout-7" not in {s["metadata"]["name"] for s in api.slices()}
                      and len(api.slice_devices(driver=DRIVER)) == 4)
    ours = [s for s in node.api.slices(driver=DRIVER) if s["spec"]["nodeName"] == NODE]
    assert [s["spec"]["pool"]["generation"] for s in ours] == [10]
    assert "other-node" in {s["metadata"]["name"] for s in node.api.slices()}
    node.kubelet.wait_for(lambda k: len(k.registrations) == 1)
    stop.set()
    time.sleep(0.3)
    writes = len(node.api.writes())
    run_driver(node)
    node.kubelet.wait_for(lambda k: len(k.registrations) >= 2)
    time.sleep(0.5)
    assert len(node.api.writes()) == writes, "a restart without device changes must not write"


def test_api_errors_are_retried(node: Node, run_driver) -> None:
    node.api.fail(500, method="POST", times=2)
    node.api.fail(403, method="GET", times=1)
    run_driver(node)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
    assert [r.status for r in node.api.requests][:1] == [403]


def test_a_fixed_partition_is_an_attribute() -> None:
    entry = slices.device_entry(_device(0, partition="mig-3g.40gb"), driver_version=None, pcie_root=None)
    assert entry["attributes"]["krakenplug.pcl.ac.cn/partition"] == {"string": "mig-3g.40gb"}
    assert "krakenplug.pcl.ac.cn/partition" not in slices.device_entry(_device(1), driver_version=None,
                                                                        pcie_root=None)["attributes"]


def test_socket_paths_carry_the_uid_and_cut_it_where_a_full_one_would_not_fit() -> None:
    from krakenplug.dra import server

    uid = "0c5d7a55-98f0-4e04-a3c5-1b6f0a2d0e11"
    registry, plugins = Path("/var/lib/kubelet/plugins_registry"), Path("/var/lib/kubelet/plugins")
    reg, dra = server.socket_paths(registry, plugins / "fake.krakenplug.pcl.ac.cn", "fake.krakenplug.pcl.ac.cn", uid)
    assert reg.name == f"fake.krakenplug.pcl.ac.cn-{uid}-reg.sock" and dra.name == f"dra-{uid}.sock"
    long_driver = "streamcomputing.krakenplug.pcl.ac.cn"
    reg, dra = server.socket_paths(registry, plugins / long_driver, long_driver, uid)
    assert reg.name == f"{long_driver}-0c5d7a55-reg.sock" and dra.name == "dra-0c5d7a55.sock"
    assert server.socket_paths(registry, plugins / long_driver, long_driver, None)[0].name == f"{long_driver}-reg.sock"
    with pytest.raises(errors.ConfigError, match="longer than the 107 bytes"):
        server.socket_paths(Path("/" + "d" * 100), plugins, long_driver, uid)

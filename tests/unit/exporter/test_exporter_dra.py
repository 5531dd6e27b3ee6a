"""DRA-allocated devices are attributed to pods from PodResources ``dynamic_resources`` (issue 13 item 5).

The kubelet lists a claim's devices by (driver, pool, device) as they appear in our ResourceSlice; the
exporter must show the same series as when the device plugin handed the same device out.
"""

from __future__ import annotations

from exporter_helpers import RESOURCE, fake_backend, hub_for
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from krakenplug import resource_names
from krakenplug.api import podresources_v1_pb2 as pr_pb2
from krakenplug.backends import base
from krakenplug.exporter import attribution, build_registry, make_collector
from krakenplug.exporter.podresources import PodResourcesWatcher
from krakenplug.testing.podresources import ClaimAllocation, PodResourcesServer, pod_resources
from krakenplug.testing.state import Allocation as KubeletAllocation

NODE = "node-dra"
DRIVER = "fake.krakenplug.pcl.ac.cn"


def _device(device_id: str, index: int) -> base.Device:
    return base.Device(id=device_id, index=index, vendor="fake", model="M", memory_total_mb=1, resource=RESOURCE)


def _claim(pod: str, device: str, *, driver: str = DRIVER, pool: str = NODE, container: str = "main",
           claim: str = "gpu", share_id: str | None = None) -> ClaimAllocation:
    return ClaimAllocation(pod=pod, namespace="ml", container=container, claim_name=f"{pod}-{claim}",
                           driver=driver, pool=pool, device=device, share_id=share_id)


def _flatten(*claims: ClaimAllocation) -> tuple[attribution.Allocation, ...]:
    return attribution.flatten(pr_pb2.ListPodResourcesResponse(pod_resources=pod_resources([], claims)))


def test_claim_devices_are_flattened_by_driver_and_pool_slash_device():
    assert _flatten(_claim("train", "fake-0"), _claim("train", "fake-0", claim="again")) == (
        attribution.Allocation("ml", "train", "main", DRIVER, f"{NODE}/fake-0"),)


def test_a_claimed_device_gets_its_own_resource_name_and_foreign_claims_are_ignored():
    devices = [_device("fake-0", 0), _device("GPU-7f3a_B", 1)]
    long_name = resource_names.dns_label("GPU-7f3a_B")  # not a DNS label as it is: published hashed
    allocations = _flatten(
        _claim("a", "fake-0"),
        _claim("b", long_name),
        _claim("c", "fake-0", driver="gpu.nvidia.com"),  # another driver's device of the same name
        _claim("d", "fake-0", pool="other-node"),  # a network-attached pool, not this node
        _claim("e", "fake-9"),  # a device we no longer have
    )
    users = attribution.assign(allocations, devices, dra_driver=DRIVER, pool=NODE)
    assert users == {"fake-0": attribution.DeviceUsers((("ml", "a", "main", RESOURCE),)),
                     "GPU-7f3a_B": attribution.DeviceUsers((("ml", "b", "main", RESOURCE),))}
    assert attribution.assign(allocations, devices) == {}  # without our driver's name, none is ours


def test_a_claim_on_a_whole_partitionable_device_is_attributed_to_every_partition():
    parts = base.as_partitions([_device("MIG-a", 1000), _device("MIG-b", 1001)], parent_id="GPU-0", index=0,
                               model="M", memory_total_mb=1, pci_bus_id=None)
    other = _device("MIG-c", 2000)
    users = attribution.assign(_flatten(_claim("whole", resource_names.dns_label("GPU-0")), _claim("one", "mig-c")),
                               [*parts, other], dra_driver=DRIVER, pool=NODE)
    assert {device: [pod for _, pod, _, _ in found.users] for device, found in users.items()} == {
        "MIG-a": ["whole"], "MIG-b": ["whole"], "MIG-c": ["one"]}


def test_a_device_shared_by_claims_is_counted_once():
    allocations = _flatten(_claim("a", "fake-0", share_id="s1"), _claim("b", "fake-0", share_id="s2"))
    users = attribution.assign(allocations, [_device("fake-0", 0)], dra_driver=DRIVER, pool=NODE)
    assert users["fake-0"].owner() == ("", "", "")
    assert [pod for _, pod, _, _ in users["fake-0"].users] == ["a", "b"]


def _scrape_through_podresources(short_tmp, *, allocations=(), claims=()) -> dict:
    """Metrics of the fake backend with the kubelet stand-in answering ``allocations`` and ``claims``."""
    socket_path = short_tmp / f"pr-{len(list(short_tmp.iterdir()))}.sock"
    server = PodResourcesServer(socket_path, allocations=lambda: list(allocations), devices=dict,
                                claims=lambda: list(claims))
    server.start()
    watcher = PodResourcesWatcher(socket_path, refresh_seconds=0.5)
    collector = make_collector(hub_for(fake_backend()), node_name=NODE, pods=watcher, dra_driver=DRIVER,
                               version="v", python_version="p")
    try:
        watcher.refresh_once()
        text = generate_latest(build_registry(collector)).decode()
    finally:
        collector.close()
        watcher.close()
        server.stop()
    return {(family.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if family.name not in ("krakenplug_collector_duration_seconds",
                                   "krakenplug_podresources_last_success_timestamp_seconds")}


def test_metrics_look_the_same_in_both_allocation_modes(short_tmp):
    by_plugin = _scrape_through_podresources(short_tmp, allocations=[
        KubeletAllocation(pod="train", namespace="ml", container="main", resource=RESOURCE, pod_uid="u1",
                          device_numa=(("fake-1", (0,)),)),
        KubeletAllocation(pod="infer", namespace="ml", container="main", resource=RESOURCE, pod_uid="u2",
                          device_numa=(("fake-3::0", (1,)),))])
    by_dra = _scrape_through_podresources(short_tmp, claims=[_claim("train", "fake-1"), _claim("infer", "fake-3")])
    assert by_dra == by_plugin
    owners = {dict(labels)["device_index"]: dict(labels)["pod"] for (name, labels), _ in by_dra.items()
              if name == "krakenplug_device_util"}
    assert owners == {"0": "", "1": "train", "2": "", "3": "infer"}

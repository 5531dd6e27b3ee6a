"""Partitionable devices (shared counters): MIG devices and VFs with their whole device, never both allocated."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from krakenplug import resource_names as names
from krakenplug.backends import base
from krakenplug.backends.fake import FakeBackend, FakeOptions
from krakenplug.cluster import config as cluster_config
from krakenplug.dra import kube, slices
from krakenplug.dra.checkpoint import Checkpoint
from krakenplug.dra.prepare import ClaimRef, Preparer
from krakenplug.dra.publisher import SlicePublisher
from krakenplug.testing.dra_api import ResourceApiServer, pool_counter_problems, slice_problems

from .conftest import DRIVER, NODE

GPU = "GPU-0a0a0a0a-0000-4000-8000-000000000000"


def _mig(index: int, uuid_: str, memory_mb: int) -> base.Device:
    return base.Device(id=uuid_, index=index, vendor="nvidia", model=f"H100 MIG {memory_mb}", memory_total_mb=memory_mb,
                       resource="r", pci_bus_id="0000:3b:00.0", partition="mig-x")


def _partitioned() -> list[base.Device]:
    """A GPU with two MIG devices (a 3g.40gb, a 1g.10gb) and an ordinary GPU beside it."""
    parts = base.as_partitions([_mig(1000, "MIG-a", 40448), _mig(1001, "MIG-b", 9856)], parent_id=GPU, index=0,
                               model="H100", memory_total_mb=81559, pci_bus_id="0000:3b:00.0")
    plain = base.Device(id="GPU-plain", index=1, vendor="nvidia", model="H100", memory_total_mb=81559, resource="r")
    return [plain, *parts]


def _objects(devices: list[base.Device]) -> list[dict[str, Any]]:
    return slices.build_pool(devices, driver=DRIVER, node=NODE, generation=1).objects()


def test_counters_live_in_their_own_slice_and_the_api_accepts_every_slice() -> None:
    objects = _objects(_partitioned())
    assert [sorted(set(o["spec"]) - {"driver", "nodeName", "pool"}) for o in objects] == [["sharedCounters"],
                                                                                         ["devices"]]
    assert all(o["spec"]["pool"]["resourceSliceCount"] == 2 for o in objects)
    assert [slice_problems(o) for o in objects] == [[], []]
    assert pool_counter_problems(objects) == []
    (counter_set,) = objects[0]["spec"]["sharedCounters"]
    assert counter_set == {"name": slices.counter_set_name(GPU),
                           "counters": {"partitions": {"value": "2"}, "memory": {"value": "81559Mi"}}}
    devices = {d["name"]: d for d in objects[1]["spec"]["devices"]}
    whole, part = devices[names.dns_label(GPU)], devices["mig-a"]
    assert whole["consumesCounters"] == [{"counterSet": counter_set["name"], "counters": counter_set["counters"]}]
    assert whole["attributes"]["krakenplug.pcl.ac.cn/model"] == {"string": "H100"}
    assert whole["capacity"]["krakenplug.pcl.ac.cn/memory"] == {"value": "81559Mi"}
    assert part["consumesCounters"] == [{"counterSet": counter_set["name"], "counters": {
        "partitions": {"value": "1"}, "memory": {"value": "40448Mi"}}}]
    assert part["attributes"]["krakenplug.pcl.ac.cn/parent"] == {"string": names.dns_label(GPU)}
    assert "consumesCounters" not in devices["gpu-plain"]


def test_more_than_eight_counter_sets_and_many_counted_devices_split_as_the_api_allows() -> None:
    devices = [part for gpu in range(10) for part in base.as_partitions(
        [_mig(1000 * (gpu + 1) + i, f"MIG-{gpu}-{i}", 9856) for i in range(7)], parent_id=f"GPU-{gpu}", index=gpu,
        model="H100", memory_total_mb=81559, pci_bus_id=None)]
    objects = _objects(devices)
    shape = [(len(o["spec"].get("sharedCounters", [])), len(o["spec"].get("devices", []))) for o in objects]
    assert shape == [(8, 0), (2, 0), (0, 64), (0, 16)]  # 10 sets; 70 partitions + 10 whole GPUs, 64 a slice
    assert all(slice_problems(o) == [] for o in objects)
    assert pool_counter_problems(objects) == []


def test_a_whole_device_is_unhealthy_when_one_of_its_partitions_is() -> None:
    plain, sick, fine = _partitioned()
    sick = base.Device(**{**sick.__dict__, "health": base.Health.UNHEALTHY, "health_reason": "XID 48"})
    (whole,) = slices.whole_devices([plain, sick, fine])
    assert (whole.id, whole.healthy, whole.health_reason) == (GPU, False, "partition MIG-a: XID 48")
    members = slices.members([plain, sick, fine])
    assert [d.id for d in members[names.dns_label(GPU)]] == ["MIG-a", "MIG-b"]
    assert [d.id for d in members["mig-b"]] == ["MIG-b"]


def test_a_listed_parent_consumes_every_counter_itself() -> None:
    plain, *parts = _partitioned()
    listed = base.Device(id=GPU, index=0, vendor="nvidia", model="H100", memory_total_mb=81559, resource="r")
    objects = _objects([listed, *parts])
    devices = [d["name"] for d in objects[1]["spec"]["devices"]]
    assert devices.count(names.dns_label(GPU)) == 1  # not synthesised twice
    assert pool_counter_problems(objects) == []


@pytest.mark.parametrize(("change", "problem"), [
    (lambda s: s.update(devices=[]), "only one of `sharedCounters` or `devices`"),
    (lambda s: s["sharedCounters"].extend({"name": f"s{i}", "counters": {"c": {"value": "1"}}} for i in range(8)),
     "at most 8"),
    (lambda s: s["sharedCounters"][0].update(name="Not_A_Label"), "must be a DNS label"),
    (lambda s: s["sharedCounters"][0].update(counters={}), "counters: required"),
    (lambda s: s["sharedCounters"][0]["counters"].update({"memory_mb": {"value": "1"}}), "must be a DNS label"),
    (lambda s: s["sharedCounters"][0]["counters"].update({f"c{i}": {"value": "1"} for i in range(31)}), "at most 32"),
    (lambda s: s["sharedCounters"].append(dict(s["sharedCounters"][0])), "duplicate"),
])
def test_the_api_stand_in_refuses_bad_counter_sets(change: Any, problem: str) -> None:
    counters = _objects(_partitioned())[0]
    change(counters["spec"])
    assert any(problem in text for text in slice_problems(counters)), slice_problems(counters)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d["consumesCounters"].extend([{"counterSet": "b", "counters": {"x": {"value": "1"}}},
                                             {"counterSet": "c", "counters": {"x": {"value": "1"}}}]), "at most 2"),
    (lambda d: d["consumesCounters"].append(dict(d["consumesCounters"][0])), "duplicate"),
    (lambda d: d["consumesCounters"][0].update(counters={}), "counters: required"),
    (lambda d: d["consumesCounters"][0].update(counterSet=""), "must be a DNS label"),
])
def test_the_api_stand_in_refuses_bad_counter_consumption(change: Any, problem: str) -> None:
    devices = _objects(_partitioned())[1]
    change(next(d for d in devices["spec"]["devices"] if d["name"] == "mig-a"))
    assert any(problem in text for text in slice_problems(devices)), slice_problems(devices)


def test_more_than_64_devices_that_consume_counters_are_refused_in_one_slice() -> None:
    devices = _objects(_partitioned())[1]
    counted = next(d for d in devices["spec"]["devices"] if d["name"] == "mig-a")
    devices["spec"]["devices"] = [{**counted, "name": f"d{i}"} for i in range(65)]
    assert any("at most 64" in text for text in slice_problems(devices))


def test_a_pool_whose_devices_consume_unknown_counters_is_refused_by_the_scheduler(clean_env: None) -> None:
    objects = _objects(_partitioned())
    devices = objects[1]
    next(d for d in devices["spec"]["devices"] if d["name"] == "mig-a")["consumesCounters"][0]["counters"][
        "engines"] = {"value": "1"}
    assert pool_counter_problems([objects[0], devices]) == [
        "device mig-a: counter 'engines' is not in set "
        f"'{slices.counter_set_name(GPU)}'"]
    assert "is not in the pool" in pool_counter_problems([devices])[0]
    with ResourceApiServer() as api:
        api.put_slice(devices)
        with pytest.raises(LookupError, match="is invalid"):
            api.allocate("ns", "c", driver=DRIVER, node=NODE)


def _scheduler(objects: list[dict[str, Any]]) -> ResourceApiServer:
    api = ResourceApiServer()
    for obj in objects:
        api.put_slice(obj)
    return api


def test_the_whole_gpu_and_its_mig_devices_are_never_both_allocated(clean_env: None) -> None:
    objects = _objects(_partitioned())
    whole = names.dns_label(GPU)
    with _scheduler(objects) as api:
        api.allocate("ns", "gpu", driver=DRIVER, node=NODE, pick=lambda d: d["name"] == whole)
        with pytest.raises(LookupError):
            api.allocate("ns", "part", driver=DRIVER, node=NODE, pick=lambda d: d["name"].startswith("mig-"))
        api.delete_claim("ns", "gpu")
        api.allocate("ns", "part", driver=DRIVER, node=NODE, pick=lambda d: d["name"] == "mig-a")
        with pytest.raises(LookupError):
            api.allocate("ns", "gpu", driver=DRIVER, node=NODE, pick=lambda d: d["name"] == whole)
        other = api.allocate("ns", "other", driver=DRIVER, node=NODE, pick=lambda d: d["name"] != whole)
        assert [r["device"] for r in other["status"]["allocation"]["devices"]["results"]] == ["gpu-plain"]
        both = api.allocate("ns", "second", driver=DRIVER, node=NODE, pick=lambda d: d["name"] == "mig-b")
        assert [r["device"] for r in both["status"]["allocation"]["devices"]["results"]] == ["mig-b"]


def test_one_claim_never_gets_the_whole_gpu_and_a_part_of_it(clean_env: None) -> None:
    whole = names.dns_label(GPU)
    with _scheduler(_objects(_partitioned())) as api:
        with pytest.raises(LookupError):
            api.allocate("ns", "c", driver=DRIVER, node=NODE, count=2, pick=lambda d: d["name"] in (whole, "mig-a"))


class _Claims:
    def __init__(self, claim: dict[str, Any]) -> None:
        self.claim = claim

    def get_claim(self, namespace: str, name: str) -> dict[str, Any]:
        return self.claim


def test_a_claim_on_the_whole_gpu_gets_every_mig_device(tmp_path: Path) -> None:
    devices = _partitioned()
    uid = str(uuid.uuid4())
    claim = {"metadata": {"namespace": "ns", "name": "c", "uid": uid},
             "status": {"reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}],
                        "allocation": {"devices": {"results": [
                            {"request": "gpu", "driver": DRIVER, "pool": NODE, "device": names.dns_label(GPU)}]}}}}
    preparer = Preparer(api=_Claims(claim), backend=FakeBackend(FakeOptions()), devices=lambda: slices.members(devices),
                        driver=DRIVER, node=NODE, cdi_dir=tmp_path / "cdi", checkpoint=Checkpoint(tmp_path / "cp.json"))
    prepared = preparer.prepare(ClaimRef("ns", uid, "c"))
    spec = json.loads((tmp_path / "cdi" / prepared.spec_file).read_text())
    (device,) = spec["devices"]
    assert "KRAKENPLUG_VISIBLE_DEVICES=MIG-a,MIG-b" in device["containerEdits"]["env"]


@pytest.mark.parametrize("gate", [True, False])
def test_without_the_feature_gate_only_partitions_are_published(clean_env: None, tmp_path: Path, gate: bool) -> None:
    def build(devices: Any, generation: int, partitionable: bool) -> slices.Pool:
        return slices.build_pool(devices, driver=DRIVER, node=NODE, generation=generation, partitionable=partitionable)

    with ResourceApiServer(partitionable_devices=gate) as api:
        kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
        resource = kube.ResourceApi(lambda: cluster_config.connect(kubeconfig), timeout_seconds=5)
        publisher = SlicePublisher(resource, node=NODE, driver=DRIVER, build=build)
        assert publisher.sync(_partitioned())
        published = api.slice_devices(driver=DRIVER)
        writes = len(api.writes())
        assert not publisher.sync(_partitioned())  # steady: nothing more is written
        assert len(api.writes()) == writes
    assert publisher.partitionable is gate
    assert (names.dns_label(GPU) in published) is gate  # the whole GPU only where counters keep it exclusive
    assert {"mig-a", "mig-b", "gpu-plain"} <= set(published)
    assert all(("consumesCounters" in device) is gate for name, device in published.items() if name != "gpu-plain")

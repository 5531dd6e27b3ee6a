"""The DRA driver end to end inside one process: slices, registration, prepare/unprepare, health."""

from __future__ import annotations

import json

import time

from krakenplug.api import drahealth_v1alpha1_pb2 as health_pb2
from krakenplug.testing.dra_kubelet import DraKubelet

from .conftest import DRIVER, NODE, Node, device_specs

DOMAIN = "krakenplug.pcl.ac.cn"


def _registered(kubelet: DraKubelet) -> bool:
    return DRIVER in kubelet.drivers


def test_publishes_one_slice_with_the_shared_vocabulary(node: Node, run_driver) -> None:
    run_driver(node)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
    (only,) = node.api.slices(driver=DRIVER)
    spec = only["spec"]
    assert spec["nodeName"] == NODE and spec["pool"]["name"] == NODE and spec["pool"]["resourceSliceCount"] == 1
    device = {d["name"]: d for d in spec["devices"]}["fake-1"]
    assert device["attributes"] == {
        f"{DOMAIN}/vendor": {"string": "fake"}, f"{DOMAIN}/model": {"string": "KrakenSim-80G"},
        f"{DOMAIN}/uuid": {"string": "fake-1"}, f"{DOMAIN}/index": {"int": 1},
        f"{DOMAIN}/driverVersion": {"string": "fake-1.0"}, f"{DOMAIN}/numaNode": {"int": 1},
        "resource.kubernetes.io/pciBusID": {"string": "0000:3c:00.0"},
    }
    assert device["capacity"] == {f"{DOMAIN}/memory": {"value": "80Gi"}}


def test_steady_state_makes_no_writes_and_a_change_bumps_the_generation(node: Node, run_driver) -> None:
    run_driver(node)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
    first = node.api.slices(driver=DRIVER)[0]["spec"]["pool"]["generation"]
    writes = len(node.api.writes())
    node.kubelet.wait_for(_registered)
    time.sleep(0.5)  # many hub polls: nothing changed, nothing is written
    assert len(node.api.writes()) == writes
    node.devices.set_health("fake-2", "Unhealthy", "XID 79")
    tainted = node.api.wait_for(lambda api: api.slice_devices(driver=DRIVER)["fake-2"].get("taints"))
    assert tainted[0]["key"] == f"{DOMAIN}/unhealthy" and tainted[0]["effect"] == "NoSchedule"
    assert tainted[0]["value"] == "XID-79"
    assert node.api.slices(driver=DRIVER)[0]["spec"]["pool"]["generation"] == first + 1
    node.devices.set_health("fake-2", "Healthy")
    node.api.wait_for(lambda api: not api.slice_devices(driver=DRIVER)["fake-2"].get("taints"))


def test_registers_with_the_kubelet_and_prepares_a_claim_into_a_cdi_spec(node: Node, run_driver) -> None:
    run_driver(node)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
    node.kubelet.wait_for(_registered)
    (registration,) = node.kubelet.registrations
    assert registration.accepted and registration.info.type == "DRAPlugin"
    assert list(registration.info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    claim = node.api.allocate("team", "train", driver=DRIVER, node=NODE, count=2,
                              config=[{"requests": [], "opaque": {"driver": DRIVER, "parameters": {
                                  "apiVersion": f"{DOMAIN}/v1alpha1", "kind": "DeviceConfig",
                                  "env": {"EXTRA": "1"}}}}])
    uid = claim["metadata"]["uid"]
    answer = node.kubelet.prepare(DRIVER, [("team", uid, "train")])[uid]
    assert answer.error == ""
    assert sorted(d.device_name for d in answer.devices) == ["fake-0", "fake-1"]
    cdi_id = f"{DRIVER}/claim={uid}-req"
    assert all(list(d.cdi_device_ids) == [cdi_id] and list(d.request_names) == ["req"] for d in answer.devices)
    spec_file = node.cdi_dir / f"{DRIVER}_claim_{uid}.json"
    spec = json.loads(spec_file.read_text())
    assert spec["kind"] == f"{DRIVER}/claim"
    (device,) = spec["devices"]
    assert device["name"] == f"{uid}-req"
    assert sorted(device["containerEdits"]["env"]) == ["EXTRA=1", "FAKE_VISIBLE_DEVICES=0,1",
                                                       "KRAKENPLUG_VISIBLE_DEVICES=fake-0,fake-1"]
    assert [n["path"] for n in device["containerEdits"]["deviceNodes"]] == ["/dev/krakenplug-fake0",
                                                                            "/dev/krakenplug-fake1"]
    again = node.kubelet.prepare(DRIVER, [("team", uid, "train")])[uid]
    assert again == answer  # idempotent
    assert node.kubelet.unprepare(DRIVER, [("team", uid, "train")])[uid].error == ""
    assert not spec_file.exists()
    assert node.kubelet.unprepare(DRIVER, [("team", uid, "train")])[uid].error == ""


def test_per_claim_errors_name_the_claim_and_the_reason(node: Node, run_driver) -> None:
    run_driver(node)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
    node.kubelet.wait_for(_registered)
    good = node.api.allocate("team", "good", driver=DRIVER, node=NODE)
    other = node.api.allocate("team", "elsewhere", driver=DRIVER, node="node-b", exclude=["fake-0"])
    bad_config = node.api.allocate("team", "config", driver=DRIVER, node=NODE, exclude=["fake-0"], config=[
        {"opaque": {"driver": DRIVER, "parameters": {"apiVersion": f"{DOMAIN}/v1alpha1", "kind": "DeviceConfig",
                                                     "env": {"1BAD": "x"}}}}])
    answers = node.kubelet.prepare(DRIVER, [
        ("team", good["metadata"]["uid"], "good"), ("team", "not-the-uid", "good"),
        ("team", other["metadata"]["uid"], "elsewhere"), ("team", "missing-uid", "missing"),
        ("team", bad_config["metadata"]["uid"], "config")])
    assert answers[good["metadata"]["uid"]].error == ""
    assert "claim team/good: UID mismatch" in answers["not-the-uid"].error
    assert "claim team/elsewhere" in answers[other["metadata"]["uid"]].error
    assert "another node" in answers[other["metadata"]["uid"]].error
    assert "claim team/missing" in answers["missing-uid"].error and "404" in answers["missing-uid"].error
    error = answers[bad_config["metadata"]["uid"]].error
    assert "claim team/config" in error and "env" in error and "1BAD" in error


def test_health_stream_reports_unhealthy_and_recovery(node: Node, run_driver) -> None:
    run_driver(node)
    node.kubelet.wait_for(lambda k: len(k.health(DRIVER)) == 4)
    assert set(node.kubelet.health(DRIVER).values()) == {"HEALTHY"}
    node.devices.set_health("fake-3", "Unhealthy", "ECC")
    node.kubelet.wait_for(lambda k: k.health(DRIVER).get("fake-3") == "UNHEALTHY")
    message = node.kubelet.drivers[DRIVER].health["fake-3"]
    assert message == (health_pb2.UNHEALTHY, "ECC")
    node.devices.set_health("fake-3", "Healthy")
    node.kubelet.wait_for(lambda k: k.health(DRIVER).get("fake-3") == "HEALTHY")


def test_kubelet_restart_registers_again_and_a_deleted_socket_comes_back(node: Node, run_driver) -> None:
    run_driver(node)
    node.kubelet.wait_for(_registered)
    node.kubelet.restart()
    node.kubelet.wait_for(_registered)
    assert len(node.kubelet.registrations) == 2
    socket = node.kubelet.drivers[DRIVER].registration_socket
    socket.unlink()
    node.kubelet.wait_for(lambda k: len(k.registrations) == 3 and _registered(k))


def test_sharing_by_memory_lets_two_claims_use_one_device(node: Node, run_driver) -> None:
    node.devices.write(device_specs(1))
    run_driver(node, share_memory_step_mb=1024)
    (device,) = node.api.wait_for(lambda api: list(api.slice_devices(driver=DRIVER).values()))
    assert device["allowMultipleAllocations"] is True
    assert device["capacity"][f"{DOMAIN}/memory"] == {"value": "80Gi", "requestPolicy": {
        "default": "80Gi", "validRange": {"min": "1Gi", "max": "80Gi", "step": "1Gi"}}}
    node.kubelet.wait_for(_registered)
    first = node.api.allocate("team", "a", driver=DRIVER, node=NODE, memory="60Gi")
    second = node.api.allocate("team", "b", driver=DRIVER, node=NODE, memory="20Gi")
    try:
        node.api.allocate("team", "c", driver=DRIVER, node=NODE, memory="1Gi")
    except LookupError:
        pass
    else:
        raise AssertionError("the stand-in scheduler overcommitted the device")
    refs = [("team", claim["metadata"]["uid"], claim["metadata"]["name"]) for claim in (first, second)]
    answers = node.kubelet.prepare(DRIVER, refs)
    share_ids = {answers[uid].devices[0].share_id for _, uid, _ in refs}
    assert len(share_ids) == 2 and all(share_ids)
    for (_, uid, _), limit in zip(refs, ("61440", "20480")):
        assert answers[uid].devices[0].device_name == "fake-0"
        spec = json.loads((node.cdi_dir / f"{DRIVER}_claim_{uid}.json").read_text())
        assert f"KRAKENPLUG_MEMORY_LIMIT_MB={limit}" in spec["devices"][0]["containerEdits"]["env"]


def test_without_an_api_server_the_driver_registers_and_claims_fail_with_the_reason(node: Node, run_driver) -> None:
    run_driver(node, kubeconfig=str(node.root / "missing-kubeconfig"))
    node.kubelet.wait_for(_registered)
    answer = node.kubelet.prepare(DRIVER, [("team", "u-1", "c")])["u-1"]
    assert "claim team/c" in answer.error and "no API server configuration" in answer.error
    assert node.kubelet.unprepare(DRIVER, [("team", "u-1", "c")])["u-1"].error == ""


def test_slices_deleted_by_the_kubelet_come_back_when_it_registers_us_again(node: Node, run_driver) -> None:
    run_driver(node)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
    node.kubelet.wait_for(_registered)
    (published,) = node.api.slices(driver=DRIVER)
    node.kubelet.stop()
    node.api.delete_slice(published["metadata"]["name"])  # the kubelet wipes an unregistered driver's slices
    node.kubelet.start()
    node.kubelet.wait_for(_registered)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4, timeout=5)

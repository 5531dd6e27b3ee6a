"""Claims: malformed ones fail alone with a clear error; prepare survives an agent restart; v1beta1 kubelets."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from krakenplug.dra import claims
from krakenplug.dra.checkpoint import Checkpoint
from krakenplug.dra.claims import ClaimError
from krakenplug.testing.dra_kubelet import DraKubelet

from .conftest import DRIVER, NODE, Node

DOMAIN = "krakenplug.pcl.ac.cn"
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12)


def _claim(results: Any, *, config: Any = None, uid: str = "u-1", node: str = NODE) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "c", "uid": uid},
            "status": {"reservedFor": [{"resource": "pods", "name": "p", "uid": "p-1"}],
                       "allocation": {"devices": {"results": results, "config": config},
                                      "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                                          {"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}}


def _read(claim: Any) -> claims.ClaimAllocation:
    return claims.read_allocation(claim, namespace="ns", name="c", uid="u-1", driver=DRIVER, node=NODE)


@settings(max_examples=300, deadline=None)
@given(claim=JSON)
def test_any_json_is_a_claim_error_or_an_allocation(claim: Any) -> None:
    try:
        _read(claim)
    except ClaimError as err:
        assert str(err).startswith("claim ns/c: ")


RESULT = st.fixed_dictionaries({"driver": st.sampled_from([DRIVER, "other.example.com"]),
                                "pool": st.sampled_from([NODE, "node-b", "", None]),
                                "device": st.sampled_from(["fake-0", "", 7, None]),
                                "request": st.sampled_from(["req", "r/sub", "", None])},
                               optional={"shareID": st.sampled_from(["s-1", "", 3]),
                                         "consumedCapacity": st.sampled_from([
                                             {f"{DOMAIN}/memory": "20Gi"}, {f"{DOMAIN}/memory": "1.5Gi"},
                                             {f"{DOMAIN}/memory": 7}, {}, "x", None])})


@settings(max_examples=300, deadline=None)
@given(results=st.lists(RESULT | JSON, max_size=4), config=st.none() | st.lists(JSON, max_size=2))
def test_malformed_allocation_results_name_the_field(results: list[Any], config: Any) -> None:
    try:
        allocation = _read(_claim(results, config=config))
    except ClaimError as err:
        message = str(err)
        assert message.startswith("claim ns/c: ")
        assert "status.allocation" in message or "no allocation result" in message
        return
    assert allocation.devices and all(d.pool == NODE and d.device and d.request for d in allocation.devices)


def test_opaque_config_is_validated_with_the_field_named() -> None:
    results = [{"driver": DRIVER, "pool": NODE, "device": "fake-0", "request": "req"}]
    config = [{"opaque": {"driver": DRIVER, "parameters": {"apiVersion": f"{DOMAIN}/v1alpha1", "kind": "Other"}}}]
    try:
        _read(_claim(results, config=config))
    except ClaimError as err:
        assert "config[0].opaque.parameters" in str(err) and "kind" in str(err) and "'Other'" in str(err)
    else:
        raise AssertionError("an unknown kind was accepted")
    good = [{"requests": ["req"], "opaque": {"driver": DRIVER, "parameters": {
        "apiVersion": f"{DOMAIN}/v1alpha1", "kind": "DeviceConfig", "env": {"KRAKENPLUG_VISIBLE_DEVICES": "x"}}}},
            {"opaque": {"driver": "someone.else", "parameters": "not ours, not validated"}}]
    assert _read(_claim(results, config=good)).env == {"req": {"KRAKENPLUG_VISIBLE_DEVICES": "x"}}


def test_a_claim_for_another_node_or_unreserved_is_refused() -> None:
    results = [{"driver": DRIVER, "pool": NODE, "device": "fake-0", "request": "req"}]
    for claim, reason in [(_claim(results, node="node-b"), "another node"),
                          ({**_claim(results), "status": {**_claim(results)["status"], "reservedFor": []}},
                           "reservedFor")]:
        try:
            _read(claim)
        except ClaimError as err:
            assert reason in str(err)
        else:
            raise AssertionError(reason)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(broken=st.lists(JSON, min_size=1, max_size=3))
def test_malformed_claims_fail_alone_through_grpc(node_with_driver: Node, broken: list[Any]) -> None:
    node = node_with_driver
    node.api.allocate("team", "good", driver=DRIVER, node=NODE, uid="good-uid")
    refs = [("team", "good-uid", "good")]
    for position, body in enumerate(broken):
        metadata = {"namespace": "team", "name": f"broken-{position}", "uid": f"b-{position}"}
        node.api.put_claim({**body, "metadata": metadata} if isinstance(body, dict) else
                           {"metadata": metadata, "status": body})
        refs.append(("team", f"b-{position}", f"broken-{position}"))
    try:
        answers = node.kubelet.prepare(DRIVER, refs)
        assert set(answers) == {uid for _, uid, _ in refs}
        assert answers["good-uid"].error == "" and answers["good-uid"].devices
        for position in range(len(broken)):
            error = answers[f"b-{position}"].error
            assert error.startswith(f"claim team/broken-{position}: "), error
    finally:
        node.kubelet.unprepare(DRIVER, refs)
        for _, _, name in refs:
            node.api.delete_claim("team", name)


def test_agent_restart_between_prepare_and_unprepare(node: Node, run_driver) -> None:
    stop = run_driver(node)
    node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
    node.kubelet.wait_for(lambda k: DRIVER in k.drivers)
    claim = node.api.allocate("team", "c", driver=DRIVER, node=NODE)
    uid = claim["metadata"]["uid"]
    assert node.kubelet.prepare(DRIVER, [("team", uid, "c")])[uid].error == ""
    spec = node.cdi_dir / f"{DRIVER}_claim_{uid}.json"
    assert spec.exists()
    stop.set()
    node.kubelet.wait_for(lambda k: DRIVER not in k.drivers)
    node.api.delete_claim("team", "c")  # the pod is gone; the claim may be too
    (node.cdi_dir / f"{DRIVER}_claim_left-by-a-crash.json").write_text("{}")
    run_driver(node)
    node.kubelet.wait_for(lambda k: DRIVER in k.drivers)
    assert not (node.cdi_dir / f"{DRIVER}_claim_left-by-a-crash.json").exists()
    assert spec.exists()
    assert node.kubelet.prepare(DRIVER, [("team", uid, "c")])[uid].error == ""  # answered from the checkpoint
    assert node.kubelet.unprepare(DRIVER, [("team", uid, "c")])[uid].error == ""
    assert not spec.exists()
    assert Checkpoint(node.plugin_dir / "checkpoint.json").all() == []


def test_a_v1beta1_kubelet_prepares_through_the_beta_service(node: Node, run_driver) -> None:
    node.kubelet.stop()
    node.kubelet = DraKubelet(node.root / "registry", known_versions=("v1beta1.DRAPlugin",))
    node.kubelet.start()
    try:
        run_driver(node, rolling_update_uid="0c5d7a55-98f0-4e04-a3c5-1b6f0a2d0e11")
        node.kubelet.wait_for(lambda k: DRIVER in k.drivers)
        driver = node.kubelet.drivers[DRIVER]
        assert driver.version == "v1beta1.DRAPlugin"
        assert driver.registration_socket.name == f"{DRIVER}-0c5d7a55-98f0-4e04-a3c5-1b6f0a2d0e11-reg.sock"
        assert driver.endpoint.endswith("/dra-0c5d7a55-98f0-4e04-a3c5-1b6f0a2d0e11.sock")
        node.api.wait_for(lambda api: len(api.slice_devices(driver=DRIVER)) == 4)
        uid = node.api.allocate("team", "beta", driver=DRIVER, node=NODE)["metadata"]["uid"]
        answer = node.kubelet.prepare(DRIVER, [("team", uid, "beta")])[uid]
        assert answer.error == "" and [d.device_name for d in answer.devices] == ["fake-0"]
    finally:
        node.kubelet.stop()

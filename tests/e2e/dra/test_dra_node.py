"""The DRA driver as the real ``krakenplug run`` process, against the kubelet and API stand-ins.

Slices are published, a claim is allocated (by the stand-in scheduler) and prepared, its CDI spec is
checked and removed on unprepare; a device turning Unhealthy shows as a taint and on the health stream;
the kubelet restarts; the agent restarts between Prepare and Unprepare; no device plugin is served.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from krakenplug.testing.dra_api import ResourceApiServer
from krakenplug.testing.dra_kubelet import DraKubelet

pytestmark = pytest.mark.e2e

DRIVER = "fake.krakenplug.pcl.ac.cn"
NODE = "e2e-node"
WAIT = 30.0


@pytest.fixture
def api() -> Iterator[ResourceApiServer]:
    with ResourceApiServer() as server:
        yield server


@pytest.fixture
def dra_kubelet(node) -> Iterator[DraKubelet]:
    with DraKubelet(node.root / "registry", health_retry_seconds=0.2) as kubelet:
        yield kubelet


def _config(node, api: ResourceApiServer) -> dict:
    return {"cdi_dir": str(node.root / "cdi"),
            "dra": {"allocation_mode": "dra", "registry_dir": str(node.root / "registry"),
                    "plugins_dir": str(node.root / "plugins"),
                    "kubeconfig": str(api.write_kubeconfig(node.root / "kubeconfig")),
                    "sysfs_root": str(node.root / "sys")}}


def test_dra_node_lifecycle(node, start_agent, api: ResourceApiServer, dra_kubelet: DraKubelet) -> None:
    agent = start_agent(config=_config(node, api))
    api.wait_for(lambda a: len(a.slice_devices(driver=DRIVER)) == 4, timeout=WAIT)
    dra_kubelet.wait_for(lambda k: DRIVER in k.drivers, timeout=WAIT)
    assert not list(node.plugin_dir.glob("*.sock")), "allocation mode dra must not serve the device plugin"
    (published,) = api.slices(driver=DRIVER)
    assert published["spec"]["nodeName"] == NODE and published["spec"]["pool"]["name"] == NODE

    claim = api.allocate("team", "trainer", driver=DRIVER, node=NODE, count=2,
                         pick=lambda d: d["attributes"]["krakenplug.pcl.ac.cn/numaNode"]["int"] == 1)
    uid = claim["metadata"]["uid"]
    answer = dra_kubelet.prepare(DRIVER, [("team", uid, "trainer")])[uid]
    assert answer.error == "" and sorted(d.device_name for d in answer.devices) == ["fake-2", "fake-3"]
    spec_path = node.root / "cdi" / f"{DRIVER}_claim_{uid}.json"
    spec = json.loads(spec_path.read_text())
    assert spec["kind"] == f"{DRIVER}/claim"
    edits = spec["devices"][0]["containerEdits"]
    assert "KRAKENPLUG_VISIBLE_DEVICES=fake-2,fake-3" in edits["env"]
    assert {n["path"] for n in edits["deviceNodes"]} == {"/dev/krakenplug-fake2", "/dev/krakenplug-fake3"}
    assert list(answer.devices[0].cdi_device_ids) == [f"{DRIVER}/claim={spec['devices'][0]['name']}"]

    # health: taint in the slice and UNHEALTHY on the stream, both clear on recovery
    dra_kubelet.wait_for(lambda k: len(k.health(DRIVER)) == 4, timeout=WAIT)
    node.devices.set_health("fake-1", "Unhealthy")
    api.wait_for(lambda a: a.slice_devices(driver=DRIVER)["fake-1"].get("taints"), timeout=WAIT)
    dra_kubelet.wait_for(lambda k: k.health(DRIVER).get("fake-1") == "UNHEALTHY", timeout=WAIT)
    node.devices.set_health("fake-1", "Healthy")
    api.wait_for(lambda a: not a.slice_devices(driver=DRIVER)["fake-1"].get("taints"), timeout=WAIT)
    dra_kubelet.wait_for(lambda k: k.health(DRIVER).get("fake-1") == "HEALTHY", timeout=WAIT)

    # kubelet restart: registered again, health stream back
    registrations = len(dra_kubelet.registrations)
    dra_kubelet.restart()
    dra_kubelet.wait_for(lambda k: DRIVER in k.drivers and len(k.registrations) > registrations, timeout=WAIT)
    dra_kubelet.wait_for(lambda k: len(k.health(DRIVER)) == 4, timeout=WAIT)

    # agent restart between Prepare and Unprepare: the checkpoint remembers the claim
    assert agent.terminate() == 0
    dra_kubelet.wait_for(lambda k: DRIVER not in k.drivers, timeout=WAIT)
    writes = len(api.writes())
    start_agent(config=_config(node, api))
    dra_kubelet.wait_for(lambda k: DRIVER in k.drivers, timeout=WAIT)
    time.sleep(1.0)
    assert len(api.writes()) == writes, "a restarted agent with unchanged devices must not write slices"
    assert spec_path.exists()
    api.delete_claim("team", "trainer")
    assert dra_kubelet.unprepare(DRIVER, [("team", uid, "trainer")])[uid].error == ""
    assert not spec_path.exists()

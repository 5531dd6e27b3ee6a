"""The device plugin with ``cdi_enabled``: the CDI names its Allocate returns resolve in spec files we write."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/fake"


def _resolve(cdi_dir, name: str) -> dict:
    """What a CDI runtime does with ``vendor/class=device``: find the spec of that kind, then the device."""
    kind, _, device = name.partition("=")
    for path in cdi_dir.glob("*.json"):
        spec = json.loads(path.read_text())
        if spec["kind"] == kind:
            return next(d for d in spec["devices"] if d["name"] == device)
    raise LookupError(f"no CDI spec of kind {kind} in {cdi_dir}")


def test_allocate_names_cdi_devices_whose_specs_exist_and_follow_health(node, kubelet, start_agent) -> None:
    cdi_dir = node.root / "cdi"
    start_agent(config={"cdi_dir": str(cdi_dir), "plugin": {"cdi_enabled": True}})
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=30)
    response = kubelet.allocate(RESOURCE, 2, pod="cdi-pod")
    names = [device.name for device in response.container_responses[0].cdi_devices]
    assert len(names) == 2
    for name in names:
        edits = _resolve(cdi_dir, name)["containerEdits"]
        assert edits["deviceNodes"][0]["hostPath"] == "/dev/null"
        assert "env" not in edits  # the Allocate response carries the env for all devices together
    node.devices.remove("fake-3")
    kubelet.wait_for_resource(RESOURCE, capacity=3, timeout=30)
    spec = json.loads((cdi_dir / "krakenplug.pcl.ac.cn_fake.json").read_text())
    assert [d["name"] for d in spec["devices"]] == ["fake-0", "fake-1", "fake-2"]

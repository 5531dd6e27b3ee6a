"""The example claims in docs/examples/dra-claims.yaml are valid objects and fit what the driver publishes."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

from krakenplug import resource_names as names
from krakenplug.backends import base
from krakenplug.dra import claims, slices

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples" / "dra-claims.yaml"


def _examples() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(EXAMPLES.read_text()) if doc]


def test_examples_are_valid_kubernetes_objects() -> None:
    for obj in _examples():
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_examples_use_only_names_the_driver_publishes() -> None:
    text = EXAMPLES.read_text()
    device = base.Device(id="d", index=0, vendor="ascend", model="Ascend910B", memory_total_mb=65536, resource="r",
                         numa_node=0)
    entry = slices.device_entry(device, driver_version="23.0.3", pcie_root=None)
    for attribute in ("krakenplug.pcl.ac.cn/model", "krakenplug.pcl.ac.cn/numaNode"):
        assert attribute in text and attribute in entry["attributes"]
    assert "krakenplug.pcl.ac.cn/memory" in entry["capacity"]
    for vendor in ("ascend", "cambricon", "nvidia"):
        assert names.driver_name(None, vendor) in text
    opaque = next(d for d in _examples() if d["metadata"]["name"] == "gpu-share-20gi")
    parameters = opaque["spec"]["spec"]["devices"]["config"][0]["opaque"]["parameters"]
    assert claims.DeviceConfig.model_validate(parameters).env == {"NCCL_DEBUG": "INFO"}

"""Label computation from devices: per-vendor keys, node-wide keys, mixed models and vendors, ties."""

from __future__ import annotations

import pytest

from krakenplug import errors
from krakenplug.backends import base
from krakenplug.discovery import labels, labels_for

from .apiserver import label_problem

D = "krakenplug.pcl.ac.cn"


def device(index: int, model: str, memory: int = 81920, *, vendor: str = "nvidia") -> base.Device:
    return base.Device(id=f"{vendor}-{index}", index=index, vendor=vendor, model=model,
                       memory_total_mb=memory, resource=f"krakenplug.pcl.ac.cn/{vendor}")


def node_wide(vendor: str, count: int, model: str, memory: int | None, driver: str | None = None) -> dict[str, str]:
    result = {f"{D}/device.vendor": vendor, f"{D}/device.count": str(count), f"{D}/device.model": model}
    if memory is not None:
        result[f"{D}/device.memory"] = str(memory)
    if driver is not None:
        result[f"{D}/device.driver-version"] = driver
    return result


LABEL_CASES = [
    pytest.param(
        [device(0, "A100-SXM4-80GB"), device(1, "A100-SXM4-80GB")], "535.104.05",
        {f"{D}/nvidia.count": "2", f"{D}/nvidia.model": "A100-SXM4-80GB", f"{D}/nvidia.memory": "81920",
         f"{D}/nvidia.driver-version": "535.104.05", f"{D}/nvidia.model.A100-SXM4-80GB.count": "2",
         **node_wide("nvidia", 2, "A100-SXM4-80GB", 81920, "535.104.05")},
        id="one-model",
    ),
    pytest.param(
        [device(0, "NVIDIA A100 80GB PCIe")], None,
        {f"{D}/nvidia.count": "1", f"{D}/nvidia.model": "NVIDIA-A100-80GB-PCIe", f"{D}/nvidia.memory": "81920",
         f"{D}/nvidia.model.NVIDIA-A100-80GB-PCIe.count": "1",
         **node_wide("nvidia", 1, "NVIDIA-A100-80GB-PCIe", 81920)},
        id="spaces-in-model-no-driver",
    ),
    pytest.param(
        [device(0, "Ascend/910B", 65536, vendor="ascend")], "23.0.rc3 (beta)",
        {f"{D}/ascend.count": "1", f"{D}/ascend.model": "Ascend-910B", f"{D}/ascend.memory": "65536",
         f"{D}/ascend.driver-version": "23.0.rc3-beta", f"{D}/ascend.model.Ascend-910B.count": "1",
         **node_wide("ascend", 1, "Ascend-910B", 65536, "23.0.rc3-beta")},
        id="slash-in-model-and-driver-sanitized",
    ),
    pytest.param(
        [device(0, "", 0)], None,
        {f"{D}/nvidia.count": "1", f"{D}/nvidia.model": "unknown", f"{D}/nvidia.model.unknown.count": "1",
         **node_wide("nvidia", 1, "unknown", None)},
        id="empty-model-and-unknown-memory",
    ),
    pytest.param(
        [device(0, "昇腾")], None,
        {f"{D}/nvidia.count": "1", f"{D}/nvidia.model": "unknown", f"{D}/nvidia.memory": "81920",
         f"{D}/nvidia.model.unknown.count": "1", **node_wide("nvidia", 1, "unknown", 81920)},
        id="unicode-only-model",
    ),
    pytest.param(
        [device(0, "T4", 15360), device(1, "A100", 40960), device(2, "A100", 81920)], None,
        {f"{D}/nvidia.count": "3", f"{D}/nvidia.model": "A100", f"{D}/nvidia.memory": "40960",
         f"{D}/nvidia.model.A100.count": "2", f"{D}/nvidia.model.T4.count": "1",
         **node_wide("nvidia", 3, "A100", 40960)},
        id="mixed-models-majority-wins-min-memory",
    ),
    pytest.param(
        [device(0, "T4", 15360), device(1, "A100", 81920)], None,
        {f"{D}/nvidia.count": "2", f"{D}/nvidia.model": "A100", f"{D}/nvidia.memory": "81920",
         f"{D}/nvidia.model.A100.count": "1", f"{D}/nvidia.model.T4.count": "1",
         **node_wide("nvidia", 2, "A100", 81920)},
        id="model-tie-alphabetical",
    ),
    pytest.param(
        [device(0, "A100 80GB"), device(1, "A100/80GB")], None,
        {f"{D}/nvidia.count": "2", f"{D}/nvidia.model": "A100-80GB", f"{D}/nvidia.memory": "81920",
         f"{D}/nvidia.model.A100-80GB.count": "2", **node_wide("nvidia", 2, "A100-80GB", 81920)},
        id="models-equal-after-sanitizing-merge",
    ),
    pytest.param(
        [device(0, "M" * 70)], None,
        {f"{D}/nvidia.count": "1", f"{D}/nvidia.model": "M" * 63, f"{D}/nvidia.memory": "81920",
         **node_wide("nvidia", 1, "M" * 63, 81920)},
        id="long-model-truncated-and-no-per-model-key",
    ),
    pytest.param(
        [device(0, "910B", 65536, vendor="ascend"), device(1, "910B", 65536, vendor="ascend"),
         device(0, "A100", 81920)], "1.0",
        {f"{D}/ascend.count": "2", f"{D}/ascend.model": "910B", f"{D}/ascend.memory": "65536",
         f"{D}/ascend.driver-version": "1.0", f"{D}/ascend.model.910B.count": "2",
         f"{D}/nvidia.count": "1", f"{D}/nvidia.model": "A100", f"{D}/nvidia.memory": "81920",
         f"{D}/nvidia.driver-version": "1.0", f"{D}/nvidia.model.A100.count": "1",
         **node_wide("ascend", 2, "910B", 65536, "1.0")},
        id="mixed-vendors-majority-vendor-node-wide",
    ),
    pytest.param(
        [device(0, "910B", 65536, vendor="ascend"), device(0, "A100", 81920)], None,
        {f"{D}/ascend.count": "1", f"{D}/ascend.model": "910B", f"{D}/ascend.memory": "65536",
         f"{D}/ascend.model.910B.count": "1", f"{D}/nvidia.count": "1", f"{D}/nvidia.model": "A100",
         f"{D}/nvidia.memory": "81920", f"{D}/nvidia.model.A100.count": "1",
         **node_wide("ascend", 1, "910B", 65536)},
        id="vendor-tie-alphabetical",
    ),
    pytest.param([], "535.104.05", {}, id="no-devices-no-labels"),
]


@pytest.mark.parametrize(("devices", "driver", "expected"), LABEL_CASES)
def test_labels_for(devices: list[base.Device], driver: str | None, expected: dict[str, str]) -> None:
    result = labels_for(devices, driver)
    assert result == expected
    for key, value in result.items():
        assert label_problem(key, value) is None, (key, value)


def test_per_model_keys_stay_within_63_characters() -> None:
    fits = "F" * (63 - len("nvidia.model..count"))
    too_long = fits + "X"
    result = labels.vendor_labels("nvidia", [device(0, fits), device(1, too_long), device(2, too_long)], None)
    assert result[f"{D}/nvidia.model.{fits}.count"] == "1"
    assert not any(too_long in key for key in result)
    assert result[f"{D}/nvidia.model"] == too_long  # the value may be long; only the key is limited


@pytest.mark.parametrize(("vendor", "namespace"), [
    ("nvidia", "nvidia"), ("StreamComputing", "streamcomputing"), ("Huawei Ascend", "huawei-ascend"),
    ("my_vendor.x", "my-vendor-x"),
], ids=["plain", "lowercased", "space", "underscore-and-dot"])
def test_vendor_namespace_folds_names(vendor: str, namespace: str) -> None:
    assert labels.vendor_namespace(vendor) == namespace


@pytest.mark.parametrize("vendor", ["", "中文", "device", "Device"],
                         ids=["empty", "nothing-left", "reserved", "reserved-case"])
def test_vendor_namespace_refuses_unusable_names(vendor: str) -> None:
    with pytest.raises(errors.ConfigError, match="cannot name label keys"):
        labels.vendor_namespace(vendor)


@pytest.mark.parametrize(("node", "expected"), [
    ({f"{D}/a.count": "2", f"{D}/b.count": "3", f"{D}/b.model": "X"}, node_wide("b", 3, "X", None)),
    ({f"{D}/a.count": "3", f"{D}/b.count": "3", f"{D}/a.memory": "10"},
     {f"{D}/device.vendor": "a", f"{D}/device.count": "3", f"{D}/device.memory": "10"}),
    ({f"{D}/a.count": "zero", f"{D}/b.count": "1"}, {f"{D}/device.vendor": "b", f"{D}/device.count": "1"}),
    ({f"{D}/a.count": "0"}, {}),
    ({f"{D}/a.model.X.count": "9", f"{D}/b.count": "1"}, {f"{D}/device.vendor": "b", f"{D}/device.count": "1"}),
    ({f"{D}/device.count": "9", f"{D}/b.count": "1"}, {f"{D}/device.vendor": "b", f"{D}/device.count": "1"}),
    ({f"{D}/a.count": "1", f"{D}/a.model": "bad value!"}, {f"{D}/device.vendor": "a", f"{D}/device.count": "1"}),
    ({"other.io/a.count": "5"}, {}),
], ids=["majority", "tie-alphabetical", "unreadable-count-ignored", "zero-count-ignored",
        "per-model-count-not-a-vendor", "node-wide-count-not-a-vendor", "invalid-value-not-copied", "foreign-domain"])
def test_node_wide_labels_follow_the_leading_vendor(node: dict[str, str], expected: dict[str, str]) -> None:
    assert labels.node_wide_labels(node) == expected

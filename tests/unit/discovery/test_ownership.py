"""Which labels a process changes: minimal patches, removals, foreign labels, several vendors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from krakenplug.backends import base
from krakenplug.discovery import labels, ownership

from .apiserver import merge_patch

D = "krakenplug.pcl.ac.cn"
FOREIGN = {"kubernetes.io/hostname": "node-a", "team": "ml", "nvidia.com/gpu.count": "8", "other.io/device.vendor": "x"}


def own_labels(vendor: str, count: int, model: str = "M", memory: int = 1024) -> dict[str, str]:
    devices = [base.Device(id=f"{vendor}{i}", index=i, vendor=vendor, model=model, memory_total_mb=memory,
                           resource="r") for i in range(count)]
    return labels.vendor_labels(vendor, devices, None)


def apply(node: dict[str, str], plan: ownership.Plan) -> dict[str, str]:
    return merge_patch(node, plan.changes)


def test_first_plan_sets_own_and_node_wide_labels_and_nothing_else() -> None:
    own = own_labels("nvidia", 2)
    plan = ownership.plan("nvidia", own, FOREIGN)
    assert plan.changes == {**own, **labels.node_wide_labels(own)}
    assert plan.desired == plan.changes
    assert not set(plan.changes) & set(FOREIGN)


def test_plan_is_empty_when_the_node_already_shows_the_labels() -> None:
    own = own_labels("nvidia", 2)
    node = apply(FOREIGN, ownership.plan("nvidia", own, FOREIGN))
    assert ownership.plan("nvidia", own, node).changes == {}


def test_plan_changes_only_what_differs() -> None:
    node = apply(FOREIGN, ownership.plan("nvidia", own_labels("nvidia", 2), FOREIGN))
    plan = ownership.plan("nvidia", own_labels("nvidia", 3), node)
    assert plan.changes == {f"{D}/nvidia.count": "3", f"{D}/nvidia.model.M.count": "3", f"{D}/device.count": "3"}


def test_plan_removes_owned_labels_that_no_longer_apply_and_keeps_foreign_ones() -> None:
    node = apply(FOREIGN, ownership.plan("nvidia", own_labels("nvidia", 2, model="A"), FOREIGN))
    node[f"{D}/nvidia.leftover-from-old-version"] = "x"
    node[f"{D}/device.leftover"] = "y"
    plan = ownership.plan("nvidia", own_labels("nvidia", 2, model="B"), node)
    assert plan.changes[f"{D}/nvidia.model.A.count"] is None
    assert plan.changes[f"{D}/nvidia.leftover-from-old-version"] is None
    assert plan.changes[f"{D}/device.leftover"] is None
    assert plan.changes[f"{D}/nvidia.model.B.count"] == "2"
    after = apply(node, plan)
    assert {k: v for k, v in after.items() if k in FOREIGN} == FOREIGN


def test_no_devices_removes_every_owned_label_but_the_scheduling_label() -> None:
    node = apply(FOREIGN, ownership.plan("nvidia", own_labels("nvidia", 2), FOREIGN))
    # device.vendor selects the agent's DaemonSet: removing it would evict the agent waiting for its driver.
    assert apply(node, ownership.plan("nvidia", {}, node)) == {**FOREIGN, f"{D}/device.vendor": "nvidia"}


def test_a_hand_set_scheduling_label_survives_a_node_without_devices() -> None:
    node = {**FOREIGN, f"{D}/device.vendor": "ascend"}
    assert ownership.plan("ascend", {}, node).changes == {}


def test_other_vendors_labels_are_never_changed() -> None:
    node = apply(FOREIGN, ownership.plan("ascend", own_labels("ascend", 8), FOREIGN))
    plan = ownership.plan("nvidia", {}, node)
    assert plan.changes == {}
    plan = ownership.plan("nvidia", own_labels("nvidia", 2), node)
    assert not any(key.startswith(f"{D}/ascend.") for key in plan.changes)
    assert not any(key.startswith(f"{D}/device.") for key in plan.changes)  # ascend leads with 8


def test_a_manually_set_node_wide_label_is_corrected() -> None:
    own = own_labels("nvidia", 2)
    node = apply(FOREIGN, ownership.plan("nvidia", own, FOREIGN))
    node[f"{D}/device.model"] = "hand-edited"
    assert ownership.plan("nvidia", own, node).changes == {f"{D}/device.model": "M"}


@pytest.mark.parametrize(("counts", "leader"), [
    ({"nvidia": 8, "ascend": 4}, "nvidia"),
    ({"nvidia": 2, "ascend": 4, "cambricon": 3}, "ascend"),
    ({"nvidia": 4, "ascend": 4}, "ascend"),
    ({"nvidia": 4, "ascend": 0}, "nvidia"),
], ids=["two-vendors", "three-vendors", "tie-alphabetical", "one-without-devices"])
def test_every_order_of_processes_converges_to_the_leading_vendor(counts: dict[str, int], leader: str) -> None:
    owns = {vendor: own_labels(vendor, count, model=f"{vendor}-m") for vendor, count in counts.items()}
    for order in itertools.permutations(counts):
        node = dict(FOREIGN)
        for vendor in order:
            node = apply(node, ownership.plan(vendor, owns[vendor], node))
        assert node[f"{D}/device.vendor"] == leader
        assert node[f"{D}/device.model"] == f"{leader}-m"
        assert node[f"{D}/device.count"] == str(counts[leader])
        for vendor in counts:  # fixed point: nobody wants to change anything any more
            assert ownership.plan(vendor, owns[vendor], node).changes == {}


@given(st.dictionaries(st.sampled_from(["nvidia", "ascend", "cambricon", "kunlun", "fake"]),
                       st.integers(min_value=0, max_value=9), min_size=1),
       st.data())
def test_any_sequence_of_device_changes_ends_stable(start: dict[str, int], data: st.DataObject) -> None:
    vendors = sorted(start)
    node = dict(FOREIGN)
    counts = dict(start)
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        vendor = data.draw(st.sampled_from(vendors))
        counts[vendor] = data.draw(st.integers(min_value=0, max_value=9))
        node = apply(node, ownership.plan(vendor, own_labels(vendor, counts[vendor]), node))
    for vendor in data.draw(st.permutations(vendors)):
        node = apply(node, ownership.plan(vendor, own_labels(vendor, counts[vendor]), node))
    for vendor in vendors:
        assert ownership.plan(vendor, own_labels(vendor, counts[vendor]), node).changes == {}
    present = {vendor: count for vendor, count in counts.items() if count}
    if present:
        expected = min(present, key=lambda vendor: (-present[vendor], vendor))
        assert node[f"{D}/device.vendor"] == expected
    else:  # only the scheduling label may stay, naming a vendor that led before
        ours = {key: value for key, value in node.items() if key.startswith(f"{D}/")}
        assert set(ours) <= {f"{D}/device.vendor"}
        assert set(ours.values()) <= set(vendors)
    assert {k: v for k, v in node.items() if not k.startswith(f"{D}/")} == FOREIGN

"""Pod attribution in the metrics for hashed replica IDs: a 62-character device ID with ``replicas: 2``."""

from __future__ import annotations

from pathlib import Path

from exporter_helpers import RESOURCE, container, fake_backend, hub_for, pod, response, write_devices
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from krakenplug import replica_ids
from krakenplug.exporter import attribution, build_registry, make_collector
from krakenplug.exporter.collector import StaticPods

LONG_ID = "GPU-" + "0123456789abcdef" * 3 + "0123456789"  # 62 characters


def test_a_pod_holding_a_hashed_replica_id_is_named_on_its_device(tmp_path: Path) -> None:
    assert len(LONG_ID) == 62
    advertised = replica_ids.replica_ids(LONG_ID, 2)  # what the plugin advertises with replicas: 2
    assert not advertised[1].startswith(LONG_ID)  # "::1" pushes it past 63 characters: hashed
    backend = fake_backend(write_devices(tmp_path / "devices.yaml", 2, device0={"id": LONG_ID}))
    answer = response(pod("train", "ml", container("main", (RESOURCE, [advertised[1]], [0]))))
    pods = StaticPods(attribution.PodAttribution(allocations=attribution.flatten(answer), up=True,
                                                 last_success_unix=1.0))
    collector = make_collector(hub_for(backend), node_name="node-a", pods=pods)
    try:
        exposition = generate_latest(build_registry(collector)).decode()
    finally:
        collector.close()

    utilization = {sample.labels["device_index"]: sample.labels for family in
                   text_string_to_metric_families(exposition) if family.name == "krakenplug_device_util"
                   for sample in family.samples}
    assert (utilization["0"]["pod"], utilization["0"]["namespace"], utilization["0"]["container"]) == (
        "train", "ml", "main")
    assert utilization["1"]["pod"] == ""

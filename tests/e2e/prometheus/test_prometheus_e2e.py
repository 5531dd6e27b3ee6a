"""A real Prometheus scraping a real ``krakenplug run`` on a node simulated by the kubelet simulator.

Prometheus runs on loopback with a 1 s scrape interval; the test reads what it stored through its HTTP
query API, so label names, staleness of departed pods and the text format are checked end to end.
Prometheus delays its first scrape after start-up (about 5.5 s), hence the generous waits.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/fake"
WAIT = 30.0
FAST_REFRESH = {"exporter": {"pod_resources_refresh_seconds": 0.5}}


def _by_device(result: list[dict]) -> dict[str, dict]:
    return {series["metric"]["device_index"]: series["metric"] for series in result}


def _pods(result: list[dict]) -> dict[str, str]:
    return {index: labels.get("pod", "") for index, labels in _by_device(result).items()}


def test_pod_labels_follow_the_kubelet(prometheus, kubelet, start_agent, metrics_port):
    start_agent("--exporter", "--metrics-address", f"127.0.0.1:{metrics_port}", config=FAST_REFRESH)
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    kubelet.allocate(RESOURCE, 1, pod="a", namespace="ns", ids=["fake-0"])

    result = prometheus.wait_for("krakenplug_device_util", lambda r: _pods(r).get("0") == "a" and len(r) == 4,
                                 what="device 0 used by pod a")
    assert _pods(result) == {"0": "a", "1": "", "2": "", "3": ""}
    labels = _by_device(result)["0"]
    assert (labels["namespace"], labels["container"], labels["node_name"], labels["vendor"]) == \
        ("ns", "main", "e2e-node", "fake")
    assert {s["metric"]["device_index"]: float(s["value"][1]) for s in result} == \
        {"0": 37.5, "1": 0.0, "2": 91.0, "3": 5.0}

    kubelet.release("a", "ns")
    kubelet.allocate(RESOURCE, 1, pod="b", namespace="ns", ids=["fake-0"])
    result = prometheus.wait_for("krakenplug_device_util", lambda r: _pods(r).get("0") == "b" and len(r) == 4,
                                 what="device 0 moved to pod b")
    assert prometheus.query('krakenplug_device_util{pod="a"}') == []  # the old series went stale at once
    allocations = prometheus.query("krakenplug_device_allocation_info")
    assert [(s["metric"]["device_index"], s["metric"]["pod"]) for s in allocations] == [("0", "b")]
    assert [s["value"][1] for s in prometheus.query("krakenplug_collector_up")] == ["1"]
    assert [s["value"][1] for s in prometheus.query("krakenplug_podresources_up")] == ["1"]
    # the join documented in docs/exporter.md
    joined = prometheus.query("krakenplug_device_util * on(node_name, vendor, device_index) group_left(model) "
                              "krakenplug_device_info")
    assert sorted((s["metric"]["device_index"], s["metric"]["model"]) for s in joined) == \
        [(str(index), "KrakenSim-80G") for index in range(4)]


def test_time_sliced_device_is_not_counted_twice(prometheus, kubelet, start_agent, metrics_port):
    start_agent("--exporter", "--metrics-address", f"127.0.0.1:{metrics_port}", "--replicas", "2",
                config=FAST_REFRESH)
    kubelet.wait_for_resource(RESOURCE, capacity=8, allocatable=8, timeout=WAIT)
    kubelet.allocate(RESOURCE, 1, pod="left", namespace="ns", ids=["fake-2::0"])
    kubelet.allocate(RESOURCE, 1, pod="right", namespace="ns", ids=["fake-2::1"])

    prometheus.wait_for('count(krakenplug_device_allocation_info{device_index="2"})',
                        lambda r: bool(r) and r[0]["value"][1] == "2", what="two pods sharing device 2")
    result = prometheus.query("krakenplug_device_util")
    assert _pods(result) == {"0": "", "1": "", "2": "", "3": ""}  # shared: the device series names no pod
    total = prometheus.query("sum(krakenplug_device_util)")
    assert float(total[0]["value"][1]) == 37.5 + 0.0 + 91.0 + 5.0
    # every pod on a busy device, one series per container (docs/exporter.md)
    busy = prometheus.query("krakenplug_device_allocation_info * on(node_name, vendor, device_index) group_left "
                            "krakenplug_device_util > 0")
    assert sorted((s["metric"]["pod"], float(s["value"][1])) for s in busy) == [("left", 91.0), ("right", 91.0)]

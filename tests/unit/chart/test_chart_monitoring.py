"""The PrometheusRule's alerts (checked and exercised with promtool) and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from chartlib import CHART, RELEASE, of_kind
from toolcheck import missing

MONITORING = ["--api-versions", "monitoring.coreos.com/v1"]
CONTRACT_METRICS = {"krakenplug_device_util", "krakenplug_device_memory_used", "krakenplug_device_memory_total",
                    "krakenplug_device_healthy", "krakenplug_collector_up"}
JOB = f"{RELEASE}-krakenplug-metrics"


@pytest.fixture(scope="session")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        missing("promtool not found (apt-get install prometheus)")
    return binary


@pytest.fixture
def rules_file(render, tmp_path: Path) -> Path:
    (rule,) = of_kind(render(values={"prometheusRule": {"enabled": True, "memoryFullRatio": 0.9}}, extra=MONITORING),
                      "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def test_prometheus_rule_is_off_by_default_and_carries_the_release_label(render) -> None:
    assert of_kind(render(extra=MONITORING), "PrometheusRule") == []
    (rule,) = of_kind(render(values={"prometheusRule": {"enabled": True}}, extra=MONITORING), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {item["alert"] for group in rule["spec"]["groups"] for item in group["rules"]}
    assert alerts == {"KrakenplugDeviceUnhealthy", "KrakenplugDeviceMemoryNearlyFull", "KrakenplugExporterDown",
                      "KrakenplugCollectorFailing"}


def test_promtool_accepts_the_rules(promtool, rules_file) -> None:
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def _series(labels: str, values: str) -> dict:
    return {"series": labels, "values": values}


DEVICE_LABELS = {"node_name": "n1", "vendor": "nvidia", "device_index": "0", "pod": "train-0", "namespace": "ml",
                 "container": "main"}
DEVICE = ", ".join(f'{key}="{value}"' for key, value in DEVICE_LABELS.items())


def test_alerts_fire_on_the_exporter_metrics(promtool, rules_file, tmp_path) -> None:
    """Unit tests for the alerts with promtool: each fires on its condition and only after its `for`."""
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                _series(f"krakenplug_device_healthy{{{DEVICE}}}", "1 1 0x10"),
                _series(f"krakenplug_device_memory_total{{{DEVICE}}}", "1000x20"),
                _series(f"krakenplug_device_memory_used{{{DEVICE}}}", "100x5 950x14"),
                _series(f'up{{job="{JOB}", instance="10.0.0.5:9478"}}', "1 1 0x10"),
                _series('up{job="someone-else", instance="10.0.0.6:80"}', "0x20"),
                _series('krakenplug_collector_up{vendor="nvidia", instance="10.0.0.5:9478"}', "0x20"),
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "KrakenplugDeviceUnhealthy", "exp_alerts": []},
                {"eval_time": "8m", "alertname": "KrakenplugDeviceUnhealthy", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", **DEVICE_LABELS},
                    "exp_annotations": {"summary": "Accelerator unhealthy", "description": (
                        "Device 0 (nvidia) on node n1 has been unhealthy for 5 minutes; the kubelet no longer "
                        "schedules it.")}}]},
                {"eval_time": "10m", "alertname": "KrakenplugDeviceMemoryNearlyFull", "exp_alerts": []},
                {"eval_time": "17m", "alertname": "KrakenplugDeviceMemoryNearlyFull", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", **DEVICE_LABELS},
                    "exp_annotations": {"summary": "Accelerator memory nearly full", "description": (
                        "Device 0 (nvidia) on node n1 has used 95% of its memory for 10 minutes.")}}]},
                {"eval_time": "8m", "alertname": "KrakenplugExporterDown", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "job": JOB, "instance": "10.0.0.5:9478"},
                    "exp_annotations": {"summary": "KrakenPlug exporter cannot be scraped", "description": (
                        "Prometheus has failed to scrape 10.0.0.5:9478 for 5 minutes; the agent pod may be "
                        "crash-looping or its node unreachable.")}}]},
                {"eval_time": "12m", "alertname": "KrakenplugCollectorFailing", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "vendor": "nvidia", "instance": "10.0.0.5:9478"},
                    "exp_annotations": {"summary": "KrakenPlug cannot read the vendor library", "description": (
                        "The nvidia collector on 10.0.0.5:9478 has failed every scrape for 10 minutes; check the "
                        "agent's log and the driver.")}}]},
            ],
        }],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((CHART / "dashboards" / "krakenplug-devices.json").read_text())


def test_dashboard_configmap_is_optional_and_labelled_for_the_grafana_sidecar(render, dashboard) -> None:
    assert [cm for cm in of_kind(render(), "ConfigMap") if "dashboard" in cm["metadata"]["name"]] == []
    objects = render(values={"dashboard": {"enabled": True, "namespace": "monitoring"}})
    (configmap,) = [cm for cm in of_kind(objects, "ConfigMap") if "dashboard" in cm["metadata"]["name"]]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert json.loads(configmap["data"]["krakenplug-devices.json"]) == dashboard


def test_dashboard_has_the_templating_variables_its_queries_use(dashboard) -> None:
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "node", "vendor", "namespace", "pod"}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("node", "vendor", "namespace", "pod"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"] is True
        assert variables[name]["query"]["query"].startswith("label_values(krakenplug_device_util")
    used = {match for panel in dashboard["panels"] for target in panel["targets"]
            for match in re.findall(r"\$(\w+)", target["expr"])}
    assert used == {"node", "vendor", "namespace", "pod"}


def test_dashboard_panels_show_utilization_and_memory_by_node_vendor_and_pod(dashboard) -> None:
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    metrics = {name for expr in expressions for name in re.findall(r"krakenplug_[a-z_]+", expr)}
    assert metrics <= CONTRACT_METRICS
    assert {"krakenplug_device_util", "krakenplug_device_memory_used", "krakenplug_device_healthy"} <= metrics
    groupings = " ".join(expressions)
    for grouping in ("by (node_name, vendor)", "by (namespace, pod)"):
        assert grouping in groupings
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}

"""RBAC, ServiceAccount, the SR-IOV ConfigMap, the ServiceMonitor and NOTES.txt."""

from __future__ import annotations

import yaml
from chartlib import CHART, NAMESPACE, REAL_VENDORS, RELEASE, by_vendor, container, of_kind, only

MONITORING = ["--api-versions", "monitoring.coreos.com/v1"]


def test_cluster_role_grants_exactly_node_access_and_event_creation(render) -> None:
    objects = render()
    (role,) = of_kind(objects, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    (binding,) = of_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    (account,) = of_kind(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]


def test_rbac_and_service_account_toggles(render) -> None:
    objects = render(values={"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "existing"}})
    assert of_kind(objects, "ClusterRole") == [] and of_kind(objects, "ClusterRoleBinding") == []
    assert of_kind(objects, "ServiceAccount") == []
    for ds in of_kind(objects, "DaemonSet"):
        assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


def test_sriov_configmap_is_rendered_only_when_enabled(render) -> None:
    assert [cm for cm in of_kind(render(), "ConfigMap") if cm["metadata"]["name"].endswith("-sriov")] == []
    values = only(["kunlun"], kunlun={"sriov": {"enabled": True, "defaultNumVfs": 2, "nodes": {"xpu-7": 3}}})
    objects = render(values=values)
    (sriov,) = [cm for cm in of_kind(objects, "ConfigMap") if cm["metadata"]["name"].endswith("-sriov")]
    assert yaml.safe_load(sriov["data"]["sriov.yaml"]) == {"defaultNumVfs": 2, "nodes": {"xpu-7": 3}}
    ds = by_vendor(objects, "DaemonSet")["kunlun"]
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["sriov-config"]["configMap"]["name"] == sriov["metadata"]["name"]
    mounts = {m["name"]: m for m in container(ds)["volumeMounts"]}
    assert mounts["sriov-config"]["mountPath"] == "/etc/krakenplug-sriov"
    # Creating VFs writes sriov_numvfs: sysfs is mounted read-write only here.
    assert mounts["sys"]["readOnly"] is False
    assert "checksum/sriov" in ds["spec"]["template"]["metadata"]["annotations"]


def test_sriov_checksum_changes_when_the_vf_counts_change(render) -> None:
    def checksum(count):
        values = only(["kunlun"], kunlun={"sriov": {"enabled": True, "defaultNumVfs": count}})
        return by_vendor(render(values=values), "DaemonSet")["kunlun"]["spec"]["template"]["metadata"][
            "annotations"]["checksum/sriov"]

    assert checksum(2) == checksum(2) != checksum(3)


def test_sriov_configmap_is_not_rendered_for_a_disabled_kunlun(render) -> None:
    values = only(["nvidia"], kunlun={"sriov": {"enabled": True}})
    assert not [cm for cm in of_kind(render(values=values), "ConfigMap") if cm["metadata"]["name"].endswith("-sriov")]


def test_service_monitor_needs_the_operator_api(render) -> None:
    assert of_kind(render(), "ServiceMonitor") == []
    assert len(of_kind(render(extra=MONITORING), "ServiceMonitor")) == 1
    assert of_kind(render(values={"serviceMonitor": {"enabled": False}}, extra=MONITORING), "ServiceMonitor") == []


def test_service_monitor_labels_selector_and_scrape_settings(render) -> None:
    objects = render(values={"serviceMonitor": {"additionalLabels": {"release": "prom", "team": "ml"},
                                                "interval": "30s", "scrapeTimeout": "20s"}}, extra=MONITORING)
    (monitor,) = of_kind(objects, "ServiceMonitor")
    (service,) = of_kind(objects, "Service")
    labels = monitor["metadata"]["labels"]
    assert labels["release"] == "prom" and labels["team"] == "ml"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"], endpoint["scrapeTimeout"]) == (
        "metrics", "/metrics", "30s", "20s")


def test_service_monitor_default_release_label_matches_kube_prometheus_stack(render) -> None:
    (monitor,) = of_kind(render(extra=MONITORING), "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_service_monitor_moves_target_pod_labels_out_of_the_way_of_the_device_labels(render) -> None:
    extra_relabel = {"action": "replace", "targetLabel": "cluster", "replacement": "lab"}
    objects = render(values={"serviceMonitor": {"relabelings": [extra_relabel]}}, extra=MONITORING)
    (endpoint,) = of_kind(objects, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["honorLabels"] is False
    assert endpoint["relabelings"] == [
        {"action": "replace", "sourceLabels": ["pod"], "targetLabel": "exporter_pod"},
        {"action": "replace", "sourceLabels": ["namespace"], "targetLabel": "exporter_namespace"},
        {"action": "replace", "sourceLabels": ["container"], "targetLabel": "exporter_container"},
        {"action": "labeldrop", "regex": "(pod|namespace|container)"},
        extra_relabel,
    ]


def test_no_service_or_monitor_without_an_exporter(render) -> None:
    objects = render(values={"exporter": {"enabled": False}}, extra=MONITORING)
    assert of_kind(objects, "Service") == [] and of_kind(objects, "ServiceMonitor") == []


def test_helm_test_pod_fetches_metrics_through_the_service(render) -> None:
    objects = render()
    (pod,) = of_kind(objects, "Pod")
    (service,) = of_kind(objects, "Service")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert f"http://{service['metadata']['name']}:9478/metrics" in pod["spec"]["containers"][0]["args"][0]


def test_notes_list_the_vendors_and_the_commands_to_check_them(helm) -> None:
    output = helm.run("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
                      "--set", "vendors.fake.enabled=true", "--set", "vendors.kunlun.enabled=false").stdout
    notes = output[output.index("NOTES:"):]
    for vendor in set(REAL_VENDORS) - {"kunlun"} | {"fake"}:
        assert f"- {vendor}: daemonset/{RELEASE}-krakenplug-{vendor}" in notes
    assert "- kunlun:" not in notes
    assert f"kubectl -n {NAMESPACE} get daemonsets -l app.kubernetes.io/instance={RELEASE}" in notes
    assert "kubectl label node <node> krakenplug.pcl.ac.cn/device.vendor=<vendor>" in notes
    assert "curl -sk http://127.0.0.1:9478/metrics" in notes
    assert "serviceMonitor.enabled is true but the cluster does not serve monitoring.coreos.com/v1" in notes


def test_notes_warn_when_no_vendor_is_enabled(helm) -> None:
    args = ["install", RELEASE, str(CHART), "--dry-run=client"]
    for vendor in REAL_VENDORS:
        args += ["--set", f"vendors.{vendor}.enabled=false"]
    notes = helm.run(*args).stdout
    assert "WARNING: no vendor is enabled" in notes

"""Least privilege: who may reach the exporter, what the agents may change in the API, the plugin socket's
mode, and the exporter's TLS/basic auth wiring."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from chartlib import CHART, NAMESPACE, RELEASE, VALUES_DIR, by_vendor, config_of, container, of_kind, only

from krakenplug import settings
from krakenplug.backends import fake
from krakenplug.plugin import allocation, inventory, server

VAP_API = ["--api-versions", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"]
WEB = {"exporter": {"webConfig": {
    "enabled": True,
    "config": {"tls_server_config": {"cert_file": "/etc/krakenplug/web/tls.crt",
                                     "key_file": "/etc/krakenplug/web/tls.key"},
               "basic_auth_users": {"prometheus": "$2y$10$abcdefghijklmnopqrstuv"}},
    "files": {"tls.crt": "CERT", "tls.key": "KEY"}}},
    "serviceMonitor": {"tlsConfig": {"insecureSkipVerify": True},
                       "basicAuth": {"username": {"name": "scrape", "key": "user"},
                                     "password": {"name": "scrape", "key": "password"}}}}


def _validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_plugin_socket_mode_is_0600_whatever_the_umask(short_tmp: Path) -> None:
    backend = fake.FakeBackend(fake.FakeOptions())
    backend.open()
    current = inventory.Inventory.build(fake.DEFAULT_RESOURCE, backend.devices(), replicas=1)
    served = server.ResourceServer(current, short_tmp / "p.sock", backend=backend,
                                   limits=allocation.Limits(replicas=1))
    previous = os.umask(0)
    try:
        served.start()
    finally:
        os.umask(previous)
    try:
        assert stat.S_IMODE(os.stat(served.socket_path).st_mode) == 0o600
    finally:
        served.stop()
        backend.close()


def test_network_policy_admits_only_the_monitoring_namespace_and_the_test_pod(render) -> None:
    (policy,) = of_kind(render(values=only(["fake"])), "NetworkPolicy")
    _validate(policy)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "agent"
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"][0] == {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}]}}
    assert rule["from"][1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    assert len(rule["from"]) == 2


def test_network_policy_namespace_is_configurable_and_absent_without_an_exporter(render) -> None:
    selector = {"matchLabels": {"team": "observability"}}
    (policy,) = of_kind(render(values={**only(["fake"]), "networkPolicy": {"namespaceSelector": selector}}),
                        "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"] == selector
    (named,) = of_kind(render(values={**only(["fake"]), "networkPolicy": {"namespaces": ["prom", "vm"]}}),
                       "NetworkPolicy")
    expressions = named["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"]
    assert expressions[0]["values"] == ["prom", "vm"]
    assert of_kind(render(values={**only(["fake"]), "exporter": {"enabled": False}}), "NetworkPolicy") == []
    assert of_kind(render(values={**only(["fake"]), "networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def test_cluster_role_grants_exactly_what_the_docs_list(render) -> None:
    (role,) = [obj for obj in of_kind(render(values=only(["fake"])), "ClusterRole")
               if obj["metadata"]["name"] == f"{RELEASE}-krakenplug"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
                             {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    docs = (CHART.parents[1] / "docs" / "chart.md").read_text()
    assert "| `\"\"` | nodes | get, list, watch, patch |" in docs
    assert "| `\"\"` | events | create |" in docs


def test_own_node_policy_is_rendered_where_the_api_exists(render) -> None:
    assert of_kind(render(values=only(["fake"])), "ValidatingAdmissionPolicy") == []
    objects = render(values=only(["fake"]), extra=VAP_API)
    (policy,) = of_kind(objects, "ValidatingAdmissionPolicy")
    (binding,) = of_kind(objects, "ValidatingAdmissionPolicyBinding")
    for obj in (policy, binding):
        _validate(obj)
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"][0]["resources"] == ["nodes"]
    (condition,) = spec["matchConditions"]
    assert condition["expression"] == (f'request.userInfo.username == "system:serviceaccount:{NAMESPACE}:'
                                       f'{RELEASE}-krakenplug"')
    expressions = [rule["expression"] for rule in spec["validations"]]
    assert "object.metadata.name == variables.node" in expressions
    assert "object.spec == oldObject.spec" in expressions
    assert "authentication.kubernetes.io/node-name" in spec["variables"][0]["expression"]
    assert spec["variables"][1]["expression"] == '["krakenplug.pcl.ac.cn/"]'
    off = {**only(["fake"]), "rbac": {"create": True, "nodeRestriction": {"enabled": False}}}
    assert of_kind(render(values=off, extra=VAP_API), "ValidatingAdmissionPolicy") == []


def test_exporter_can_listen_on_the_pod_ip_only(render, monkeypatch, clean_env) -> None:
    objects = render(values={**only(["fake"]), "exporter": {"bindPodIP": True}})
    env = container(by_vendor(objects, "DaemonSet")["fake"])["env"]
    names = [item["name"] for item in env]
    assert names.index("POD_IP") < names.index("KRAKENPLUG_EXPORTER__ADDRESS")  # $(POD_IP) expands only then
    assert env[names.index("POD_IP")]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env[names.index("KRAKENPLUG_EXPORTER__ADDRESS")]["value"] == "$(POD_IP):9478"
    # What the agent sees once the kubelet expanded the variable: env beats the ConfigMap's 0.0.0.0.
    monkeypatch.setenv("KRAKENPLUG_EXPORTER__ADDRESS", "10.244.1.7:9478")
    monkeypatch.setenv("POD_IP", "10.244.1.7")
    assert settings.load().exporter.address == "10.244.1.7:9478"
    default_env = container(by_vendor(render(values=only(["fake"])), "DaemonSet")["fake"])["env"]
    assert "KRAKENPLUG_EXPORTER__ADDRESS" not in {item["name"] for item in default_env}


def test_service_links_are_off_so_no_stray_krakenplug_variables_appear(render) -> None:
    for ds in of_kind(render(values=only(["fake", "nvidia"])), "DaemonSet"):
        assert ds["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_web_config_secret_mount_settings_probes_and_service_monitor(render, tmp_path, monkeypatch,
                                                                    clean_env) -> None:
    objects = render(values={**only(["fake"]), **WEB}, extra=["--api-versions", "monitoring.coreos.com/v1"])
    (secret,) = of_kind(objects, "Secret")
    _validate(secret)
    assert yaml.safe_load(secret["stringData"]["web-config.yml"]) == WEB["exporter"]["webConfig"]["config"]
    assert secret["stringData"]["tls.crt"] == "CERT"
    ds = by_vendor(objects, "DaemonSet")["fake"]
    _validate(ds)
    mounts = {m["name"]: m for m in container(ds)["volumeMounts"]}
    assert mounts["web-config"] == {"name": "web-config", "mountPath": "/etc/krakenplug/web", "readOnly": True}
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["web-config"]["secret"]["secretName"] == secret["metadata"]["name"]
    agent = container(ds)
    assert agent["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert agent["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": "HTTPS"}
    configmap = by_vendor(objects, "ConfigMap")["fake"]
    assert config_of(configmap)["exporter"]["web_config_file"] == "/etc/krakenplug/web/web-config.yml"
    (tmp_path / "config.yaml").write_text(configmap["data"]["config.yaml"])
    loaded = settings.load(config_file=tmp_path / "config.yaml")
    assert loaded.exporter.web_config_file == Path("/etc/krakenplug/web/web-config.yml")
    (monitor,) = of_kind(objects, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    assert endpoint["basicAuth"] == WEB["serviceMonitor"]["basicAuth"]
    (test_pod,) = of_kind(objects, "Pod")
    assert "--no-check-certificate https://" in test_pod["spec"]["containers"][0]["args"][0]
    assert "/healthz" in test_pod["spec"]["containers"][0]["args"][0]


def test_web_config_off_by_default_and_an_existing_secret_is_used_as_is(render, render_error) -> None:
    plain = render(values=only(["fake"]), extra=["--api-versions", "monitoring.coreos.com/v1"])
    assert of_kind(plain, "Secret") == []
    assert "web_config_file" not in config_of(by_vendor(plain, "ConfigMap")["fake"])["exporter"]
    assert of_kind(plain, "ServiceMonitor")[0]["spec"]["endpoints"][0]["scheme"] == "http"
    existing = render(values={**only(["fake"]), "exporter": {"webConfig": {"enabled": True, "existingSecret": "mine"}}})
    assert of_kind(existing, "Secret") == []
    volumes = by_vendor(existing, "DaemonSet")["fake"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "web-config", "secret": {"secretName": "mine", "defaultMode": 0o400}} in volumes
    error = render_error(values={**only(["fake"]), "exporter": {"webConfig": {"enabled": True}}})
    assert "exporter.webConfig.enabled=true needs exporter.webConfig.existingSecret" in error


def test_notes_say_when_the_prometheus_rule_was_skipped(helm) -> None:
    output = helm.run("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
                      "--set", "prometheusRule.enabled=true").stdout
    assert "prometheusRule.enabled is true but the cluster does not serve monitoring.coreos.com/v1" in output
    assert "PrometheusRule (the alerts) was created either" in output
    quiet = helm.run("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE).stdout
    assert "prometheusRule.enabled is true but" not in quiet


def test_readme_upgrade_with_plugin_replicas_works_and_the_gpu_columns_name_rendered_resources(render) -> None:
    readme = (CHART.parents[1] / "README.md").read_text()
    assert "-f values/nvidia-only.yaml --set vendors.nvidia.plugin.replicas=2" in readme
    objects = render(files=[VALUES_DIR / "nvidia-only.yaml"], extra=["--set", "vendors.nvidia.plugin.replicas=2"])
    config = config_of(by_vendor(objects, "ConfigMap")["nvidia"])
    assert config["plugin"]["replicas"] == 2
    # The kubectl columns: the default resource and the per-model one nvidia-only.yaml adds.
    rules = config["backends"]["nvidia"]["resources"]
    assert [rule["name"] for rule in rules] == ["krakenplug.pcl.ac.cn/nvidia-a100"]
    for resource in ("krakenplug\\.pcl\\.ac\\.cn/nvidia,", "krakenplug\\.pcl\\.ac\\.cn/nvidia-a100'"):
        assert resource in readme


def test_the_key_the_old_readme_used_is_refused_naming_the_real_one(render_error) -> None:
    error = render_error(set_args=["vendors.nvidia.replicas=2"])
    assert "'replicas was renamed: set vendors.nvidia.plugin.replicas'" in error


def _admits(policy: dict, request: dict) -> bool:
    """Evaluates the policy's CEL (matchConditions, variables, validations) like the API server would."""
    import celpy  # cel-python: a CEL implementation, so the expressions are run, not only read

    env = celpy.Environment()
    activation = {key: celpy.json_to_cel(value) for key, value in request.items()}

    def run(expression: str) -> object:
        return env.program(env.compile(expression)).evaluate(activation)

    spec = policy["spec"]
    if not all(run(condition["expression"]) for condition in spec["matchConditions"]):
        return True  # not the agent: the policy does not apply
    variables = {}
    for variable in spec["variables"]:
        activation["variables"] = celpy.json_to_cel(variables)
        variables[variable["name"]] = run(variable["expression"])
    activation["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in variables.items()})
    return all(bool(run(rule["expression"])) for rule in spec["validations"])


def _node(name: str, labels: dict, *, annotations: dict | None = None, taints: list | None = None) -> dict:
    metadata: dict = {"name": name, "labels": labels}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"taints": taints or []}}


AGENT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-krakenplug"
BASE = {"kubernetes.io/hostname": "node-a", "krakenplug.pcl.ac.cn/device.vendor": "nvidia"}


@pytest.mark.parametrize(("user", "node_claim", "old", "new", "admitted"), [
    (AGENT, "node-a", _node("node-a", BASE), _node("node-a", {**BASE, "krakenplug.pcl.ac.cn/nvidia.count": "8"}), True),
    (AGENT, "node-a", _node("node-a", {**BASE, "krakenplug.pcl.ac.cn/nvidia.count": "8"}), _node("node-a", BASE), True),
    (AGENT, "node-a", _node("node-b", BASE), _node("node-b", {**BASE, "krakenplug.pcl.ac.cn/nvidia.count": "8"}),
     False),
    (AGENT, None, _node("node-a", BASE), _node("node-a", {**BASE, "krakenplug.pcl.ac.cn/nvidia.count": "8"}), False),
    (AGENT, "node-a", _node("node-a", BASE), _node("node-a", {**BASE, "team": "ml"}), False),
    (AGENT, "node-a", _node("node-a", BASE), _node("node-a", {"krakenplug.pcl.ac.cn/device.vendor": "nvidia"}), False),
    (AGENT, "node-a", _node("node-a", BASE), _node("node-a", BASE, taints=[{"key": "x", "effect": "NoSchedule"}]),
     False),
    (AGENT, "node-a", _node("node-a", BASE), _node("node-a", BASE, annotations={"a": "b"}), False),
    ("system:node:node-b", None, _node("node-a", BASE), _node("node-a", {**BASE, "team": "ml"}), True),
], ids=["own-label-added", "own-label-removed", "other-node", "no-node-claim", "foreign-label", "foreign-label-removed",
        "spec-changed", "annotation-added", "someone-else"])
def test_own_node_policy_admits_only_the_agents_own_labels_on_its_own_node(render, user: str, node_claim: str | None,
                                                                          old: dict, new: dict,
                                                                          admitted: bool) -> None:
    (policy,) = of_kind(render(values=only(["fake"]), extra=VAP_API), "ValidatingAdmissionPolicy")
    extra = {"authentication.kubernetes.io/node-name": [node_claim]} if node_claim else {}
    request = {"request": {"userInfo": {"username": user, "extra": extra}}, "object": new, "oldObject": old}
    assert _admits(policy, request) is admitted

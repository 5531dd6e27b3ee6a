"""What helm template renders: DaemonSets per vendor, node selection, mounts, privileges, probes, names."""

from __future__ import annotations

import pytest
from chartlib import ALL_VENDORS, REAL_VENDORS, RELEASE, by_vendor, config_of, container, of_kind, only

VENDOR_LABEL = "krakenplug.pcl.ac.cn/device.vendor"


def _terms(daemonset: dict) -> list[list[dict]]:
    affinity = daemonset["spec"]["template"]["spec"]["affinity"]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [term["matchExpressions"] for term in terms]


def _mounts(daemonset: dict) -> dict[str, dict]:
    """mountPath -> {readOnly, hostPath (None for non-hostPath volumes), volume}."""
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    result = {}
    for mount in container(daemonset)["volumeMounts"]:
        volume = volumes[mount["name"]]
        result[mount["mountPath"]] = {"readOnly": mount.get("readOnly", False),
                                      "hostPath": volume.get("hostPath", {}).get("path"), "volume": volume}
    return result


def test_defaults_deploy_one_daemonset_per_real_vendor_and_none_for_fake(render) -> None:
    daemonsets = by_vendor(render(), "DaemonSet")
    assert sorted(daemonsets) == sorted(REAL_VENDORS)
    assert {ds["metadata"]["name"] for ds in daemonsets.values()} == {f"{RELEASE}-krakenplug-{v}" for v in REAL_VENDORS}


@pytest.mark.parametrize("enabled", [("ascend",), ("fake",), ("nvidia", "kunlun"), ()],
                         ids=["ascend", "fake", "nvidia+kunlun", "none"])
def test_only_enabled_vendors_get_a_daemonset_and_a_configmap(render, enabled) -> None:
    objects = render(values=only(enabled))
    assert sorted(by_vendor(objects, "DaemonSet")) == sorted(enabled)
    assert sorted(by_vendor(objects, "ConfigMap")) == sorted(enabled)


def test_set_flag_enables_one_vendor(render) -> None:
    objects = render(extra=["--set", "vendors.fake.enabled=true", "--set", "vendors.nvidia.enabled=false"])
    assert sorted(by_vendor(objects, "DaemonSet")) == sorted(set(REAL_VENDORS) - {"nvidia"} | {"fake"})


def test_daemonset_selectors_are_disjoint_and_the_service_selects_every_agent(render) -> None:
    objects = render(values=only(ALL_VENDORS))
    daemonsets = by_vendor(objects, "DaemonSet")
    selectors = [tuple(sorted(ds["spec"]["selector"]["matchLabels"].items())) for ds in daemonsets.values()]
    assert len(set(selectors)) == len(ALL_VENDORS)
    (service,) = of_kind(objects, "Service")
    for ds in daemonsets.values():
        pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        assert ds["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9478, "targetPort": "metrics", "protocol": "TCP"}]


def test_nvidia_is_selected_by_any_nfd_pci_label_variant_or_the_vendor_label(render) -> None:
    terms = _terms(by_vendor(render(values=only(["nvidia"])), "DaemonSet")["nvidia"])
    assert terms == [
        [{"key": "feature.node.kubernetes.io/pci-0300_10de.present", "operator": "In", "values": ["true"]}],
        [{"key": "feature.node.kubernetes.io/pci-0302_10de.present", "operator": "In", "values": ["true"]}],
        [{"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In", "values": ["true"]}],
        [{"key": VENDOR_LABEL, "operator": "In", "values": ["nvidia"]}],
        [{"key": "krakenplug.pcl.ac.cn/nvidia.count", "operator": "Exists"}],
    ]


@pytest.mark.parametrize("vendor, pci_vendor", [("ascend", "19e5"), ("cambricon", "cabc"), ("kunlun", "1d22"),
                                                ("streamcomputing", "23e2")])
def test_each_vendor_is_selected_by_its_pci_vendor_id(render, vendor, pci_vendor) -> None:
    terms = _terms(by_vendor(render(), "DaemonSet")[vendor])
    keys = [expr["key"] for term in terms for expr in term]
    nfd = [key for key in keys if key.startswith("feature.node.kubernetes.io/")]
    assert nfd and all(key.endswith(f"{pci_vendor}.present") for key in nfd)
    assert f"feature.node.kubernetes.io/pci-1200_{pci_vendor}.present" in nfd
    assert f"feature.node.kubernetes.io/pci-{pci_vendor}.present" in nfd
    assert terms[-2:] == [[{"key": VENDOR_LABEL, "operator": "In", "values": [vendor]}],
                          [{"key": f"krakenplug.pcl.ac.cn/{vendor}.count", "operator": "Exists"}]]


def test_fake_is_selected_only_by_our_own_labels(render) -> None:
    terms = _terms(by_vendor(render(values=only(["fake"])), "DaemonSet")["fake"])
    assert terms == [[{"key": VENDOR_LABEL, "operator": "In", "values": ["fake"]}],
                     [{"key": "krakenplug.pcl.ac.cn/fake.count", "operator": "Exists"}]]


def test_per_vendor_affinity_node_selector_and_tolerations_override_the_defaults(render) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]}}}
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    objects = render(values=only(["nvidia", "ascend"], nvidia={
        "affinity": affinity, "nodeSelector": {"pool": "gpu"}, "tolerations": tolerations}))
    daemonsets = by_vendor(objects, "DaemonSet")
    nvidia, ascend = (daemonsets[v]["spec"]["template"]["spec"] for v in ("nvidia", "ascend"))
    assert nvidia["affinity"] == affinity
    assert nvidia["nodeSelector"] == {"pool": "gpu"}
    assert nvidia["tolerations"] == tolerations
    assert "nodeSelector" not in ascend
    assert {"operator": "Exists", "effect": "NoSchedule"} in ascend["tolerations"]


def test_every_agent_runs_the_backend_with_the_mounted_config_and_node_name(render) -> None:
    objects = render(values=only(ALL_VENDORS))
    for vendor, ds in by_vendor(objects, "DaemonSet").items():
        agent = container(ds)
        assert agent["args"] == ["run", "--backend", vendor, "--config", "/etc/krakenplug/config.yaml"]
        assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in agent["env"]
        mounts = _mounts(ds)
        assert mounts["/etc/krakenplug"]["volume"]["configMap"]["name"] == f"{RELEASE}-krakenplug-{vendor}"
        assert ds["spec"]["template"]["spec"]["priorityClassName"] == "system-node-critical"
        assert ds["spec"]["template"]["spec"]["serviceAccountName"] == f"{RELEASE}-krakenplug"


def test_real_vendors_mount_kubelet_dirs_host_dev_and_read_only_sysfs(render) -> None:
    for vendor, ds in by_vendor(render(), "DaemonSet").items():
        mounts = _mounts(ds)
        assert mounts["/var/lib/kubelet/device-plugins"] == {
            **mounts["/var/lib/kubelet/device-plugins"], "readOnly": False,
            "hostPath": "/var/lib/kubelet/device-plugins"}
        assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
        assert mounts["/dev"]["hostPath"] == "/dev"
        assert container(ds)["terminationMessagePath"] == "/tmp/termination-log"
        assert mounts["/host/sys"]["hostPath"] == "/sys" and mounts["/host/sys"]["readOnly"] is True
        assert config_of(by_vendor(render(), "ConfigMap")[vendor])["backends"][vendor]["sysfs_root"] == "/host/sys"


@pytest.mark.parametrize("vendor, host_dirs", [
    ("ascend", ["/usr/local/Ascend/driver", "/usr/local/dcmi"]),
    ("cambricon", ["/usr/local/neuware"]),
    ("kunlun", ["/usr/local/xpu"]),
    ("streamcomputing", ["/usr/local/hpe"]),
])
def test_vendor_library_dirs_are_mounted_read_only_at_the_same_path(render, vendor, host_dirs) -> None:
    daemonset = by_vendor(render(), "DaemonSet")[vendor]
    mounts = _mounts(daemonset)
    for directory in host_dirs:
        assert mounts[directory]["hostPath"] == directory
        assert mounts[directory]["readOnly"] is True
    # The vendor library's own dependencies are found in the mounted driver directories.
    env = {item["name"]: item.get("value") for item in container(daemonset)["env"]}
    for directory in env["LD_LIBRARY_PATH"].split(":"):
        assert any(directory == root or directory.startswith(root + "/") for root in host_dirs), directory


def test_nvidia_driver_root_is_mounted_read_only_and_rendered_as_driver_root(render) -> None:
    objects = render(values=only(["nvidia"], nvidia={"hostMounts": {"driver-root": {"hostPath": "/run/nvidia/driver"}}}))
    mounts = _mounts(by_vendor(objects, "DaemonSet")["nvidia"])
    assert mounts["/host/driver-root"]["hostPath"] == "/run/nvidia/driver"
    assert mounts["/host/driver-root"]["readOnly"] is True
    options = config_of(by_vendor(objects, "ConfigMap")["nvidia"])["backends"]["nvidia"]
    assert options["driver_root"] == "/host/driver-root"


def test_fake_vendor_has_no_host_device_or_sysfs_mounts(render) -> None:
    mounts = _mounts(by_vendor(render(values=only(["fake"])), "DaemonSet")["fake"])
    assert "/dev" not in mounts and "/host/sys" not in mounts
    host_paths = {m["hostPath"] for m in mounts.values() if m["hostPath"]}
    assert host_paths == {"/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources"}


def test_disabled_components_drop_their_mounts_ports_and_probes(render) -> None:
    objects = render(values={**only(["fake"]), "exporter": {"enabled": False}, "plugin": {"enabled": False}})
    ds = by_vendor(objects, "DaemonSet")["fake"]
    agent = container(ds)
    assert "ports" not in agent and "livenessProbe" not in agent and "readinessProbe" not in agent
    assert set(_mounts(ds)) == {"/etc/krakenplug", "/tmp"}
    assert of_kind(objects, "Service") == [] and of_kind(objects, "Pod") == []


def test_probes_and_port_follow_the_exporter_settings(render) -> None:
    agent = container(by_vendor(render(values={**only(["fake"]), "exporter": {"port": 9555}}), "DaemonSet")["fake"])
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9555, "protocol": "TCP"}]
    assert agent["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # An HTTP check: a wedged server still completes TCP handshakes. /healthz stays 200 while the backend is
    # unavailable (zero devices), so a node without a driver does not crash-loop.
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_hardware_vendors_run_privileged_and_fake_runs_without_capabilities(render) -> None:
    objects = render(values=only(ALL_VENDORS))
    for vendor, ds in by_vendor(objects, "DaemonSet").items():
        context = container(ds)["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        if vendor == "fake":
            assert context.get("privileged") is None
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        else:
            assert context["privileged"] is True
            assert "allowPrivilegeEscalation" not in context


def test_privilege_can_be_turned_off_per_vendor(render) -> None:
    objects = render(values=only(["nvidia"], nvidia={"privileged": False,
                                                     "extraEnv": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}))
    agent = container(by_vendor(objects, "DaemonSet")["nvidia"])
    assert "privileged" not in agent["securityContext"]
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in agent["env"]


def test_image_tag_defaults_to_app_version_and_vendor_overrides_win(render) -> None:
    objects = render(values=only(["nvidia", "ascend"], ascend={"image": {"repository": "registry.local/kp-ascend",
                                                                          "tag": "1.2"}}))
    daemonsets = by_vendor(objects, "DaemonSet")
    assert container(daemonsets["nvidia"])["image"] == "ghcr.io/c2net-ai/krakenplug:0.1.0"
    assert container(daemonsets["ascend"])["image"] == "registry.local/kp-ascend:1.2"
    digest = "sha256:" + "a" * 64
    objects = render(values={**only(["nvidia"]), "image": {"digest": digest}})
    assert container(by_vendor(objects, "DaemonSet")["nvidia"])["image"] == f"ghcr.io/c2net-ai/krakenplug@{digest}"


def test_update_strategy_and_resources_are_configurable(render) -> None:
    values = {**only(["cambricon", "kunlun"], kunlun={"resources": {"limits": {"memory": "1Gi"}}}),
              "updateStrategy": {"type": "OnDelete"}, "resources": {"requests": {"cpu": "10m"}}}
    daemonsets = by_vendor(render(values=values), "DaemonSet")
    assert daemonsets["cambricon"]["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert container(daemonsets["cambricon"])["resources"] == {"requests": {"cpu": "10m"}}
    assert container(daemonsets["kunlun"])["resources"] == {"limits": {"memory": "1Gi"}}


def test_long_release_names_keep_the_vendor_suffix_within_63_characters(helm, tmp_path) -> None:
    import yaml
    from chartlib import CHART

    release = "r" * 53
    output = helm.run("template", release, str(CHART), "--set", "vendors.fake.enabled=true").stdout
    names = [doc["metadata"]["name"] for doc in yaml.safe_load_all(output) if doc and doc["kind"] == "DaemonSet"]
    deployed = set(REAL_VENDORS) | {"fake"}
    assert len(names) == len(set(names)) == len(deployed)
    for name in names:
        assert len(name) <= 63
        assert any(name.endswith("-" + vendor) for vendor in deployed)


def test_config_checksum_changes_with_the_values_and_only_for_that_vendor(render) -> None:
    def checksums(values):
        return {vendor: ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for vendor, ds in by_vendor(render(values=values), "DaemonSet").items()}

    base = checksums(only(["nvidia", "fake"]))
    assert base == checksums(only(["nvidia", "fake"]))
    changed = checksums(only(["nvidia", "fake"], fake={"plugin": {"replicas": 2}}))
    assert changed["fake"] != base["fake"]
    assert changed["nvidia"] == base["nvidia"]
    logged = checksums({**only(["nvidia", "fake"]), "log": {"level": "debug"}})
    assert logged["fake"] != base["fake"] and logged["nvidia"] != base["nvidia"]


def test_configmap_holds_exactly_the_hashed_config(render) -> None:
    import hashlib

    objects = render(values=only(["fake"]))
    configmap = by_vendor(objects, "ConfigMap")["fake"]
    ds = by_vendor(objects, "DaemonSet")["fake"]
    text = "config.yaml: |\n" + "".join("  " + line + "\n" for line in configmap["data"]["config.yaml"].splitlines())
    digest = hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    assert ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == digest

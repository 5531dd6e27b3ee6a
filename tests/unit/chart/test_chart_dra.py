"""The chart's DRA mode: per-vendor DeviceClass, RBAC for resource.k8s.io, mounts, config, rolling-update UID."""

from __future__ import annotations

import sys
from typing import Any

import kubernetes_validate

from chartlib import ALL_VENDORS, by_vendor, config_of, container, of_kind, only
from krakenplug import backends

DRA = {"dra": {"allocationMode": "dra"}}


def _volumes(daemonset: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["hostPath"]["path"] for v in daemonset["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}


def test_device_plugin_mode_renders_nothing_of_dra(render) -> None:
    objects = render(values=only(["nvidia"]))
    assert not of_kind(objects, "DeviceClass")
    assert not [o for o in of_kind(objects, "ClusterRole") if o["metadata"]["name"].endswith("-dra")]
    assert "plugins-registry" not in _volumes(by_vendor(objects, "DaemonSet")["nvidia"])
    assert config_of(by_vendor(objects, "ConfigMap")["nvidia"])["dra"]["allocation_mode"] == "device-plugin"


def test_dra_mode_renders_class_rbac_mounts_and_config(render) -> None:
    objects = render(values=only(["nvidia", "ascend"], nvidia={**DRA}))
    classes = {o["metadata"]["name"]: o for o in of_kind(objects, "DeviceClass")}
    assert set(classes) == {"nvidia.krakenplug.pcl.ac.cn", "accelerator.krakenplug.pcl.ac.cn"}
    nvidia = classes["nvidia.krakenplug.pcl.ac.cn"]["spec"]
    assert nvidia["selectors"] == [{"cel": {"expression": 'device.driver == "nvidia.krakenplug.pcl.ac.cn"'}}]
    assert "extendedResourceName" not in nvidia
    (role,) = [o for o in of_kind(objects, "ClusterRole") if o["metadata"]["name"].endswith("-dra")]
    assert role["rules"] == [
        {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"],
         "verbs": ["create", "update", "delete", "list", "watch"]},
        {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["get"]}]
    daemonsets = by_vendor(objects, "DaemonSet")
    volumes = _volumes(daemonsets["nvidia"])
    assert volumes["plugins-registry"] == "/var/lib/kubelet/plugins_registry"
    assert volumes["kubelet-plugins"] == "/var/lib/kubelet/plugins"
    assert volumes["cdi-specs"] == "/var/run/cdi"
    assert "plugins-registry" not in _volumes(daemonsets["ascend"])
    env = {e["name"]: e for e in container(daemonsets["nvidia"]).get("env", [])}
    assert env["KRAKENPLUG_DRA__ROLLING_UPDATE_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    config = config_of(by_vendor(objects, "ConfigMap")["nvidia"])
    assert config["dra"]["allocation_mode"] == "dra" and config["cdi_dir"] == "/var/run/cdi"
    for obj in of_kind(objects, "DeviceClass") + [role]:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_the_claim_watch_cache_gets_list_and_watch_on_claims_and_nothing_else(render) -> None:
    objects = render(values=only(["nvidia", "ascend"], nvidia={"dra": {"allocationMode": "dra", "watchClaims": True}},
                                 ascend={**DRA}))
    (role,) = [o for o in of_kind(objects, "ClusterRole") if o["metadata"]["name"].endswith("-dra")]
    assert role["rules"][1] == {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"],
                                "verbs": ["get", "list", "watch"]}
    configs = by_vendor(objects, "ConfigMap")
    assert config_of(configs["nvidia"])["dra"]["watch_claims"] is True
    assert config_of(configs["ascend"])["dra"]["watch_claims"] is False


def test_extended_resource_name_is_the_vendors_classic_resource(render) -> None:
    extended = {"dra": {"allocationMode": "dra", "deviceClass": {"extendedResourceName": True}}}
    objects = render(values=only(["kunlun", "nvidia"], kunlun=extended,
                                 nvidia={**extended, "resourceName": "example.com/gpu"}))
    classes = {o["metadata"]["name"]: o["spec"] for o in of_kind(objects, "DeviceClass")}
    assert classes["kunlun.krakenplug.pcl.ac.cn"]["extendedResourceName"] == "baidu.com/xpu"
    assert classes["nvidia.krakenplug.pcl.ac.cn"]["extendedResourceName"] == "example.com/gpu"
    assert classes["kunlun.krakenplug.pcl.ac.cn"]["selectors"][0]["cel"]["expression"] == \
        'device.driver == "kunlun.krakenplug.pcl.ac.cn"'


def test_default_classic_resource_of_every_vendor_is_its_backends_default(render) -> None:
    """The chart knows a backend's default resource only from the vendor's values.yaml entry
    (``resourceName``, else krakenplug.pcl.ac.cn/<vendor>); it must match the backend's DEFAULT_RESOURCE."""
    extended = {"dra": {"allocationMode": "dra", "deviceClass": {"extendedResourceName": True}}}
    objects = render(values=only(ALL_VENDORS, **{vendor: extended for vendor in ALL_VENDORS}))
    classes = {o["metadata"]["name"]: o["spec"] for o in of_kind(objects, "DeviceClass")}
    for vendor in ALL_VENDORS:
        backend_default = sys.modules[backends.load_class(vendor).__module__].DEFAULT_RESOURCE
        assert classes[f"{vendor}.krakenplug.pcl.ac.cn"]["extendedResourceName"] == backend_default, vendor


def test_a_bad_allocation_mode_or_driver_name_is_refused(render_error) -> None:
    assert "allocationMode" in render_error(set_args=["dra.allocationMode=both"])
    assert "driverName" in render_error(set_args=["vendors.nvidia.dra.driverName=Not_A_Name"])

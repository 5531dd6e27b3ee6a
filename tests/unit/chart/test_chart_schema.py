"""values.schema.json and templates/validation.yaml refuse bad values with a message naming the value."""

from __future__ import annotations

import pytest

BAD_VALUES = [
    # (id, --set arguments, text the error must contain)
    ("unknown-vendor", ["vendors.amd.enabled=true"], "additional properties 'amd' not allowed"),
    ("unknown-vendor-key", ["vendors.nvidia.gpuCount=2"], "additional properties 'gpuCount' not allowed"),
    ("unknown-top-level-key", ["vendor.nvidia.enabled=true"], "additional properties 'vendor' not allowed"),
    ("resource-name-without-domain", ["vendors.nvidia.resourceName=gpu"],
     "'gpu' does not match pattern"),
    ("resource-name-bad-domain", ["vendors.ascend.resourceName=Huawei_Com/npu"],
     "'Huawei_Com/npu' does not match pattern"),
    ("resource-name-two-slashes", ["vendors.ascend.resourceName=a.com/b/c"], "'a.com/b/c' does not match pattern"),
    ("resource-name-kubernetes-io", ["vendors.nvidia.resourceName=kubernetes.io/gpu"],
     "'kubernetes.io/gpu' does not match pattern '^resource names under the kubernetes.io domain are reserved"),
    ("resource-name-kubernetes-io-subdomain", ["vendors.nvidia.resourceName=gpu.kubernetes.io/a100"],
     "'gpu.kubernetes.io/a100' does not match pattern '^resource names under the kubernetes.io domain"),
    ("resource-name-requests-prefix", ["vendors.fake.resourceName=requests.example.com/sim"],
     "'requests.example.com/sim' does not match pattern '^the requests. prefix is reserved"),
    ("resource-name-too-long", ["vendors.fake.resourceName=example.com/" + "x" * 64],
     "'example.com/" + "x" * 64 + "' does not match pattern"),
    ("resource-rule-name", ["vendors.nvidia.resourceRules[0].name=kubernetes.io/a100",
                            "vendors.nvidia.resourceRules[0].models[0]=A100*"],
     "'kubernetes.io/a100' does not match pattern '^resource names under the kubernetes.io domain"),
    ("port-zero", ["exporter.port=0"], "/exporter/port': minimum: got 0, want 1"),
    ("port-too-high", ["exporter.port=70000"], "/exporter/port': maximum: got 70,000, want 65,535"),
    ("port-not-a-number", ["exporter.port=http"],
     "'http' does not match pattern '^port numbers are integers from 1 to 65535$'"),
    ("vendor-port-too-high", ["vendors.fake.exporter.port=99999"], "/vendors/fake/exporter/port': maximum: got 99,999"),
    ("enabled-not-bool", ["vendors.nvidia.enabled=yes-please"], "/vendors/nvidia/enabled': got string, want boolean"),
    ("replicas-not-int", ["plugin.replicas=two"], "/plugin/replicas': got string, want integer"),
    ("replicas-zero", ["vendors.fake.plugin.replicas=0"], "/vendors/fake/plugin/replicas': minimum: got 0, want 1"),
    ("log-level", ["log.level=verbose"], "/log/level': value must be one of"),
    ("seconds-negative", ["vendors.nvidia.options.call_timeout_seconds=-1"],
     "/vendors/nvidia/options/call_timeout_seconds': exclusiveMinimum: got -1, want 0"),
    ("relative-host-path", ["vendors.cambricon.libraryDirs[0]=usr/local/neuware"],
     "'usr/local/neuware' does not match pattern '^/'"),
    ("bad-node-label", ["vendors.nvidia.nodeLabels[0]=not a label"], "'not a label' does not match pattern"),
    ("vf-count-negative", ["vendors.kunlun.sriov.defaultNumVfs=-2"], "/vendors/kunlun/sriov/defaultNumVfs'"),
    ("vendor-specific-option-elsewhere", ["vendors.ascend.options.ignored_xids[0]=13"],
     "/vendors/ascend/options': additional properties 'ignored_xids' not allowed"),
    ("unknown-backend-option", ["defaults.options.colour=blue"],
     "/defaults/options': additional properties 'colour' not allowed"),
    ("renamed-key", ["vendors.nvidia.ignoredXids[0]=13"],
     "/vendors/nvidia/ignoredXids': value must be 'ignoredXids was renamed: set vendors.nvidia.options.ignored_xids'"),
    ("renamed-driver-root", ["vendors.nvidia.driverRoot=/run/nvidia/driver"],
     "'driverRoot was renamed: set vendors.nvidia.hostMounts.driver-root.hostPath'"),
    ("renamed-extra-options", ["vendors.fake.extraOptions.a=1"], "'extraOptions was renamed: set vendors.fake.options'"),
    ("relative-mount", ["vendors.nvidia.hostMounts.driver-root.hostPath=run/nvidia"], "'run/nvidia' does not match"),
    ("scrape-interval", ["serviceMonitor.interval=15 seconds"], "'15 seconds' does not match pattern"),
    ("image-digest", ["image.digest=latest"], "'latest' does not match pattern"),
]


@pytest.mark.parametrize("set_args, message", [case[1:] for case in BAD_VALUES], ids=[case[0] for case in BAD_VALUES])
def test_schema_refuses_bad_values_naming_the_path_or_value(render_error, set_args, message) -> None:
    error = render_error(set_args=set_args)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


@pytest.mark.parametrize("name", ["example.com/gpu", "huawei.com/Ascend910B3", "baidu.com/xpu",
                                  "krakenplug.pcl.ac.cn/nvidia-a100", "a/b", "k8s.io/x", "notkubernetes.iox/y"])
def test_schema_accepts_valid_extended_resource_names(render, name) -> None:
    objects = render(extra=["--set", f"vendors.nvidia.resourceName={name}"])
    assert any(obj["kind"] == "DaemonSet" for obj in objects)


def test_fake_device_entries_are_checked_against_the_fake_file_format(render_error) -> None:
    error = render_error(values={"vendors": {"fake": {"enabled": True, "devices": [
        {"id": "sim-0", "model": "Sim", "memory_mb": 1024, "utilisation": 5}]}}})
    assert "/vendors/fake/devices/0': additional properties 'utilisation' not allowed" in error


def test_agent_with_every_component_disabled_is_refused_with_instructions(render_error) -> None:
    error = render_error(set_args=["vendors.fake.enabled=true", "plugin.enabled=false", "exporter.enabled=false",
                                   "discovery.enabled=false"])
    assert "vendors.ascend: plugin, exporter and discovery are all disabled" in error
    assert "vendors.ascend.enabled=false" in error


def test_sriov_without_privilege_is_refused_with_instructions(render_error) -> None:
    error = render_error(set_args=["vendors.kunlun.sriov.enabled=true", "vendors.kunlun.privileged=false"])
    assert "vendors.kunlun.sriov.enabled=true needs vendors.kunlun.privileged=true" in error


def test_fake_devices_and_a_devices_file_together_are_refused(render_error) -> None:
    error = render_error(values={"vendors": {"fake": {
        "enabled": True, "options": {"devices_file": "/data/devices.yaml"},
        "devices": [{"id": "sim-0", "model": "Sim", "memory_mb": 1024}]}}})
    assert "vendors.fake: set either devices" in error

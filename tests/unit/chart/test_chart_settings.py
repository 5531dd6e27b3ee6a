"""The config.yaml the chart renders is what the agent loads: the real settings loader and the real
backend registry read it, so every value a user sets reaches the process, and no key is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from chartlib import ALL_VENDORS, CHART, REPO_ROOT, VALUES_DIR, by_vendor, config_of, only

from krakenplug import backends, settings

EXAMPLES = sorted(VALUES_DIR.glob("*.yaml"))


def _load(configmap: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> settings.Settings:
    """Writes the ConfigMap's files where the pod mounts them (relative to tmp_path) and loads config.yaml."""
    for name, text in configmap["data"].items():
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("NODE_NAME", "node-under-test")
    return settings.load(config_file=tmp_path / "config.yaml")


def _create(loaded: settings.Settings):
    """backends.create validates backends.<vendor> with the vendor's own options model (extra=forbid)."""
    return backends.create(loaded)


@pytest.mark.parametrize("vendor", ALL_VENDORS)
def test_default_config_of_every_vendor_loads_and_creates_its_backend(render, tmp_path, monkeypatch, clean_env,
                                                                      vendor) -> None:
    configmap = by_vendor(render(values=only(ALL_VENDORS)), "ConfigMap")[vendor]
    loaded = _load(configmap, tmp_path, monkeypatch)
    assert loaded.backend == vendor
    assert loaded.node_name == "node-under-test"
    backend = _create(loaded)
    assert type(backend).name == vendor


@pytest.mark.parametrize("values_file", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_every_example_renders_configs_the_agent_accepts(render, tmp_path, monkeypatch, clean_env,
                                                         values_file) -> None:
    for vendor, configmap in by_vendor(render(files=[values_file]), "ConfigMap").items():
        directory = tmp_path / vendor
        directory.mkdir()
        _create(_load(configmap, directory, monkeypatch))


def test_values_a_user_sets_reach_the_loaded_settings(render, tmp_path, monkeypatch, clean_env) -> None:
    values = {
        **only(["fake"], fake={
            "resourceName": "example.com/sim",
            "resourceRules": [{"name": "example.com/sim-big", "models": ["*80G*"]}],
            "failOnInitError": True,
            "plugin": {"replicas": 3, "failRequestsGreaterThanOne": True},
            "log": {"level": "debug"},
        }),
        "log": {"format": "json"},
        "exporter": {"port": 9555, "collectTimeoutSeconds": 1.5, "baseUnitMetrics": True,
                     "podResourcesDir": "/run/kubelet/pod-resources"},
        "discovery": {"enabled": False, "intervalSeconds": 60},
        "plugin": {"devicePluginDir": "/var/lib/kubelet/device-plugins", "rescanIntervalSeconds": 2},
    }
    loaded = _load(by_vendor(render(values=values), "ConfigMap")["fake"], tmp_path, monkeypatch)
    assert loaded.plugin.replicas == 3
    assert loaded.plugin.fail_requests_greater_than_one is True
    assert loaded.plugin.rescan_interval_seconds == 2
    assert (loaded.log.level, loaded.log.format) == ("debug", "json")
    assert loaded.fail_on_init_error is True
    assert loaded.exporter.address == "0.0.0.0:9555"
    assert loaded.exporter.collect_timeout_seconds == 1.5
    assert loaded.exporter.base_unit_metrics is True
    assert str(loaded.exporter.pod_resources_socket) == "/run/kubelet/pod-resources/kubelet.sock"
    assert (loaded.discovery.enabled, loaded.discovery.interval_seconds) == (False, 60)
    backend = _create(loaded)
    backend.open()
    try:
        resources = {device.model: device.resource for device in backend.devices()}
    finally:
        backend.close()
    assert resources == {"KrakenSim-80G": "example.com/sim-big"}


def test_resource_name_reaches_the_devices_the_backend_reports(render, tmp_path, monkeypatch, clean_env) -> None:
    loaded = _load(by_vendor(render(values=only(["fake"], fake={"resourceName": "example.com/sim"})),
                             "ConfigMap")["fake"], tmp_path, monkeypatch)
    backend = _create(loaded)
    backend.open()
    try:
        assert {device.resource for device in backend.devices()} == {"example.com/sim"}
    finally:
        backend.close()


def test_fake_devices_from_values_are_the_devices_the_backend_serves(render, tmp_path, monkeypatch,
                                                                     clean_env) -> None:
    devices = [{"id": "sim-a", "model": "Sim-16G", "memory_mb": 16384, "utilization": 12.5},
               {"id": "sim-b", "model": "Sim-16G", "memory_mb": 16384, "health": "Unhealthy"}]
    configmap = by_vendor(render(values=only(["fake"], fake={"devices": devices})), "ConfigMap")["fake"]
    assert set(configmap["data"]) == {"config.yaml", "fake-devices.yaml"}
    loaded = _load(configmap, tmp_path, monkeypatch)
    # The pod reads the file at the mount path; here the test's copy stands in for it.
    options = loaded.selected_options()
    assert str(options.devices_file) == "/etc/krakenplug/fake-devices.yaml"  # type: ignore[attr-defined]
    options.devices_file = tmp_path / "fake-devices.yaml"  # type: ignore[attr-defined]
    backend = _create(loaded)
    backend.open()
    try:
        found = {(d.id, d.health.value) for d in backend.devices()}
    finally:
        backend.close()
    assert found == {("sim-a", "Healthy"), ("sim-b", "Unhealthy")}


def test_vendor_options_pass_through_verbatim_and_are_validated_by_the_backend(render, tmp_path, monkeypatch,
                                                                              clean_env) -> None:
    values = only(["nvidia", "ascend", "streamcomputing", "kunlun"],
                  nvidia={"options": {"ignored_xids": [13], "fatal_xids": [48, 79], "health_checks": False,
                                      "call_timeout_seconds": 2, "health_poll_interval_seconds": 7,
                                      "library_path": "/opt/libnvidia-ml.so.1"}},
                  ascend={"options": {"driver_mounts": ["/usr/local/Ascend/driver"]}},
                  streamcomputing={"libraryDirs": ["/opt/hpe"],
                                   "options": {"mount_hpe_runtime": False, "max_devices_per_container": 2,
                                               "smi_path": "/opt/hpe/bin/stc-smi", "hpe_root": "/opt/hpe"}},
                  kunlun={"sriov": {"enabled": True, "defaultNumVfs": 2, "nodeLabel": "example.com/vfs"}})
    configmaps = by_vendor(render(values=values), "ConfigMap")
    expected = {
        "nvidia": {"ignored_xids": [13], "fatal_xids": [48, 79], "health_checks": False, "call_timeout_seconds": 2,
                   "health_poll_interval_seconds": 7, "library_path": "/opt/libnvidia-ml.so.1",
                   "driver_root": "/host/driver-root", "sysfs_root": "/host/sys"},
        "ascend": {"driver_mounts": ["/usr/local/Ascend/driver"], "sysfs_root": "/host/sys"},
        "streamcomputing": {"mount_hpe_runtime": False, "max_devices_per_container": 2, "hpe_root": "/opt/hpe",
                            "smi_path": "/opt/hpe/bin/stc-smi", "sysfs_root": "/host/sys",
                            "resource_name": "streamcomputing.com/npu"},  # its values.yaml entry's resourceName
        "kunlun": {"sriov_config_file": "/etc/krakenplug-sriov/sriov.yaml", "sriov_node_label": "example.com/vfs",
                   "pod_resources_socket": "/var/lib/kubelet/pod-resources/kubelet.sock", "sysfs_root": "/host/sys",
                   "resource_name": "baidu.com/xpu"},
    }
    for vendor, options in expected.items():
        directory = tmp_path / vendor
        directory.mkdir()
        assert config_of(configmaps[vendor])["backends"][vendor] == options
        loaded = _load(configmaps[vendor], directory, monkeypatch)
        _create(loaded)
        validated = loaded.selected_options()
        for key, value in options.items():
            assert getattr(validated, key) == value or str(getattr(validated, key)) == value, key


def test_kunlun_without_sriov_ignores_the_vf_label(render, tmp_path, monkeypatch, clean_env) -> None:
    configmap = by_vendor(render(values=only(["kunlun"])), "ConfigMap")["kunlun"]
    assert config_of(configmap)["backends"]["kunlun"] == {"sriov_node_label": None, "sysfs_root": "/host/sys",
                                                          "resource_name": "baidu.com/xpu"}
    loaded = _load(configmap, tmp_path, monkeypatch)
    _create(loaded)
    assert loaded.selected_options().sriov_node_label is None  # type: ignore[attr-defined]


def test_any_backend_option_passes_through_and_unknown_ones_are_refused(render, render_error, tmp_path, monkeypatch,
                                                                       clean_env) -> None:
    good = _load(by_vendor(render(values=only(["fake"], fake={"options": {"watch_interval_seconds": 0.5}})),
                           "ConfigMap")["fake"], tmp_path, monkeypatch)
    _create(good)
    assert good.selected_options().watch_interval_seconds == 0.5  # type: ignore[attr-defined]
    error = render_error(values=only(["fake"], fake={"options": {"no_such_option": 1}}))
    assert "/vendors/fake/options': additional properties 'no_such_option' not allowed" in error


def test_defaults_hold_what_every_vendor_shares_and_a_vendor_overrides_them(render, tmp_path, monkeypatch,
                                                                           clean_env) -> None:
    values = {**only(["nvidia", "ascend"], ascend={"options": {"call_timeout_seconds": 9}}),
              "defaults": {"options": {"call_timeout_seconds": 4}, "failOnInitError": True}}
    configmaps = by_vendor(render(values=values), "ConfigMap")
    nvidia, ascend = (config_of(configmaps[vendor]) for vendor in ("nvidia", "ascend"))
    assert nvidia["backends"]["nvidia"]["call_timeout_seconds"] == 4
    assert ascend["backends"]["ascend"]["call_timeout_seconds"] == 9
    assert nvidia["fail_on_init_error"] is True and ascend["fail_on_init_error"] is True
    assert nvidia["backends"]["nvidia"]["driver_root"] == "/host/driver-root"  # the vendor's own keep


def test_no_template_branches_on_a_vendor_name() -> None:
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            assert "eq .vendor" not in template.read_text() and "eq $vendor" not in template.read_text(), template


def test_committed_schema_is_the_generated_one() -> None:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "ci" / "gen-values-schema.py"), "--check"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr

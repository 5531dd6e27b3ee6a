"""The collector through its registry: pod labels, shared devices, failures, optional series, health."""

from __future__ import annotations

import dataclasses
import importlib.metadata

import pytest
from exporter_helpers import (
    RESOURCE,
    VendorExtrasFake,
    container,
    fake_backend,
    hub_for,
    pod,
    response,
    write_devices,
)
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from krakenplug import errors
from krakenplug.backends import base, fallback
from krakenplug.backends.fake import FakeBackend, FakeOptions
from krakenplug.exporter import attribution, build_registry, make_collector
from krakenplug.exporter.collector import StaticPods
from krakenplug.hub import DeviceHub

NODE = "node-a"


class MutablePods:
    """A pod source a test can change between scrapes, like the kubelet's answers change."""

    def __init__(self, *pods) -> None:
        self.set(*pods)

    def set(self, *pods) -> None:
        self.attribution = attribution.PodAttribution(allocations=attribution.flatten(response(*pods)), up=True,
                                                      last_success_unix=1.0)

    def current(self) -> attribution.PodAttribution:
        return self.attribution


@pytest.fixture
def scrape():
    """scrape(backend, pods=..., **kwargs) -> {metric name: [(labels dict, value), ...]} via the registry."""
    collectors, hubs = [], []

    def run(backend, pods=None, **kwargs):
        if not collectors:
            hubs.append(hub_for(backend))
            collectors.append(make_collector(hubs[0], node_name=NODE, pods=pods, **kwargs))
        hubs[0].refresh()  # what the agent's hub does on its poll interval
        exposition = generate_latest(build_registry(collectors[0])).decode()
        return {family.name: [(sample.labels, sample.value) for sample in family.samples]
                for family in text_string_to_metric_families(exposition)}

    yield run
    for made in collectors:
        made.close()


def series(metrics, name, **match):
    return [(labels, value) for labels, value in metrics.get(name, [])
            if all(labels.get(key) == wanted for key, wanted in match.items())]


def owner(metrics, index):
    (labels, _), = series(metrics, "krakenplug_device_util", device_index=str(index))
    return labels["pod"], labels["namespace"], labels["container"]


def test_free_devices_carry_empty_pod_labels(scrape):
    metrics = scrape(fake_backend())
    assert [owner(metrics, i) for i in range(4)] == [("", "", "")] * 4
    assert metrics.get("krakenplug_device_allocation_info") is None
    labels, value = series(metrics, "krakenplug_device_util", device_index="2")[0]
    assert value == 91 and labels["node_name"] == NODE and labels["vendor"] == "fake"


def test_a_device_used_by_one_container_names_it(scrape):
    pods = MutablePods(pod("train", "ml", container("main", (RESOURCE, ["fake-1"], [0]), (RESOURCE, ["fake-1"], [1]))))
    metrics = scrape(fake_backend(), pods)
    assert owner(metrics, 1) == ("train", "ml", "main")
    for name in ("krakenplug_device_memory_used", "krakenplug_device_memory_total"):
        assert series(metrics, name, device_index="1")[0][0]["pod"] == "train"
    assert series(metrics, "krakenplug_device_allocation_info") == [
        ({"node_name": NODE, "vendor": "fake", "device_index": "1", "pod": "train", "namespace": "ml",
          "container": "main", "resource": RESOURCE}, 1.0)]


def test_a_time_sliced_device_is_counted_once(scrape):
    pods = MutablePods(pod("a", "ns", container("main", (RESOURCE, ["fake-2::0"], [1]))),
                       pod("b", "ns", container("main", (RESOURCE, ["fake-2::1"], [1]))),
                       pod("c", "ns", container("main", (RESOURCE, ["fake-2::2", "fake-2::3"], [1]))))
    metrics = scrape(fake_backend(), pods)
    assert owner(metrics, 2) == ("", "", "")
    assert sum(value for _, value in series(metrics, "krakenplug_device_util")) == 37.5 + 0 + 91 + 5
    shares = series(metrics, "krakenplug_device_allocation_info", device_index="2")
    assert sorted(labels["pod"] for labels, _ in shares) == ["a", "b", "c"]


def test_a_departed_pod_leaves_no_series(scrape):
    pods = MutablePods(pod("gone", "ns", container("main", (RESOURCE, ["fake-0"], [0]))),
                       pod("stays", "ns", container("main", (RESOURCE, ["fake-3"], [1]))))
    backend = fake_backend()
    assert owner(scrape(backend, pods), 0) == ("gone", "ns", "main")
    pods.set(pod("stays", "ns", container("main", (RESOURCE, ["fake-3"], [1]))))
    metrics = scrape(backend, pods)
    assert not [labels for samples in metrics.values() for labels, _ in samples if labels.get("pod") == "gone"]
    assert owner(metrics, 0) == ("", "", "") and owner(metrics, 3) == ("stays", "ns", "main")


def test_a_failing_backend_sets_collector_up_0_and_keeps_the_page_valid(scrape, tmp_path):
    backend = fake_backend(write_devices(tmp_path / "d.yaml", faults={"sample_error": "ECC storm"}))
    metrics = scrape(backend)
    assert series(metrics, "krakenplug_collector_up") == [({"vendor": "fake"}, 0.0)]
    assert "krakenplug_device_util" not in metrics and "krakenplug_device_memory_used" not in metrics
    assert len(series(metrics, "krakenplug_device_info")) == 4
    assert len(series(metrics, "krakenplug_device_healthy")) == 4


def test_a_slow_backend_costs_its_values_not_the_scrape(scrape, tmp_path):
    devices_file = write_devices(tmp_path / "d.yaml", faults={"sample_delay_seconds": 0.3})
    metrics = scrape(fake_backend(devices_file), timeout_seconds=0.05)
    assert series(metrics, "krakenplug_collector_up")[0][1] == 0.0
    assert "krakenplug_device_util" not in metrics
    assert len(series(metrics, "krakenplug_device_healthy")) == 4
    write_devices(devices_file)  # let the late read finish quickly so the worker can stop


class _OneDeviceFails(FakeBackend):
    def sample(self, device: base.Device) -> base.DeviceSample:
        if device.id == "fake-1":
            raise errors.DeviceQueryError("fake-1: device lost")
        return super().sample(device)


class _Thermal(FakeBackend):
    """Offers temperature and power for device 0 only, as a vendor with partial support would."""

    def sample(self, device: base.Device) -> base.DeviceSample:
        sample = super().sample(device)
        if device.index == 0:
            return dataclasses.replace(sample, temperature_celsius=61.0, power_watts=245.5, memory_total_mb=None)
        return sample


def _opened(cls):
    backend = cls(FakeOptions())
    backend.open()
    return backend


def test_one_failing_device_drops_only_its_value_series(scrape):
    metrics = scrape(_opened(_OneDeviceFails))
    assert sorted(labels["device_index"] for labels, _ in metrics["krakenplug_device_util"]) == ["0", "2", "3"]
    assert sorted(labels["device_index"] for labels, _ in metrics["krakenplug_device_info"]) == ["0", "1", "2", "3"]
    assert series(metrics, "krakenplug_device_healthy", device_index="1")[0][1] == 1.0
    assert series(metrics, "krakenplug_collector_up")[0][1] == 0.0


def test_temperature_and_power_only_where_offered(scrape):
    metrics = scrape(_opened(_Thermal))
    assert [(labels["device_index"], value) for labels, value in metrics["krakenplug_device_temperature_celsius"]] \
        == [("0", 61.0)]
    assert [(labels["device_index"], value) for labels, value in metrics["krakenplug_device_power_watts"]] \
        == [("0", 245.5)]
    # a sample without memory_total falls back to the device's own total
    assert series(metrics, "krakenplug_device_memory_total", device_index="0")[0][1] == 81920


def test_reserved_memory_only_where_the_backend_reports_it(scrape):
    metrics = scrape(fake_backend(cls=VendorExtrasFake), base_unit_metrics=True)
    assert [(labels["device_index"], value) for labels, value in metrics["krakenplug_device_memory_reserved"]] \
        == [("0", 512.0)]
    assert [(labels["device_index"], value) for labels, value in
            metrics["krakenplug_device_memory_reserved_bytes"]] == [("0", 512 * 1048576)]
    (labels, _), = metrics["krakenplug_device_memory_reserved"]
    used_labels = {tuple(sorted(labels.items())) for labels, _ in metrics["krakenplug_device_memory_used"]}
    assert tuple(sorted(labels.items())) in used_labels  # joins 1:1 with memory_used


def test_no_reserved_memory_series_without_the_field(scrape):
    metrics = scrape(fake_backend(), base_unit_metrics=True)
    assert "krakenplug_device_memory_reserved" not in metrics
    assert "krakenplug_device_memory_reserved_bytes" not in metrics


class _NoMemoryInfo(FakeBackend):
    """Device 1 answers no memory query, as NVML does for an integrated SoC GPU (NOT_SUPPORTED) or a MIG-enabled
    GPU without permission (NO_PERMISSION): the NVIDIA backend then lists it with memory_total_mb 0 (unknown)."""

    def sample(self, device: base.Device) -> base.DeviceSample:
        sample = super().sample(device)
        if device.index == 1:
            return dataclasses.replace(sample, memory_used_mb=None, memory_total_mb=None)
        return sample


def test_unknown_memory_total_is_absent_not_zero(scrape, tmp_path):
    devices_file = write_devices(tmp_path / "d.yaml", 2, device1={"memory_mb": 0})
    backend = _NoMemoryInfo(FakeOptions(devices_file=devices_file))
    backend.open()
    metrics = scrape(backend, base_unit_metrics=True)
    for name in ("krakenplug_device_memory_total", "krakenplug_device_memory_total_bytes",
                 "krakenplug_device_memory_used", "krakenplug_device_memory_used_bytes"):
        assert [labels["device_index"] for labels, _ in metrics[name]] == ["0"], name
    assert [labels["device_index"] for labels, _ in metrics["krakenplug_device_util"]] == ["0", "1"]
    assert [labels["device_index"] for labels, _ in metrics["krakenplug_device_info"]] == ["0", "1"]
    assert series(metrics, "krakenplug_collector_up")[0][1] == 1.0  # absent by design is not a failed read


def test_backend_info_names_the_library_api_and_path(scrape):
    metrics = scrape(fake_backend(cls=VendorExtrasFake))
    assert metrics["krakenplug_backend_info"] == [(
        {"vendor": "fake", "vendor_library": "/usr/lib/libkrakensim.so.2", "vendor_api": "krakensim v2",
         "vendor_path": "krakensim+sysfs", "vendor_reason": "krakensimInit succeeded"}, 1.0)]


class _WithoutLibraryInfo(FakeBackend):
    library_info = None  # opts out of SupportsLibraryInfo, as a backend that never had it


def test_no_backend_info_from_a_backend_without_library_info(scrape):
    assert "krakenplug_backend_info" not in scrape(fake_backend(cls=_WithoutLibraryInfo))


def test_the_fake_backend_names_its_devices_file(scrape):
    assert scrape(fake_backend())["krakenplug_backend_info"] == [(
        {"vendor": "fake", "vendor_library": "fake devices file", "vendor_api": "krakenplug fake v1",
         "vendor_path": "embedded", "vendor_reason": ""}, 1.0)]


class _BrokenLibraryInfo(FakeBackend):
    def library_info(self) -> base.LibraryInfo:
        raise errors.DeviceQueryError("nvmlSystemGetNVMLVersion: NVML_ERROR_UNKNOWN")


def test_a_failing_library_info_costs_only_the_info_series(scrape):
    metrics = scrape(_opened(_BrokenLibraryInfo))
    assert "krakenplug_backend_info" not in metrics
    assert series(metrics, "krakenplug_collector_up")[0][1] == 1.0
    assert len(metrics["krakenplug_device_util"]) == 4


def test_health_follows_the_device(scrape, tmp_path):
    devices_file = write_devices(tmp_path / "d.yaml", 2, device1={"health": "Unhealthy", "health_reason": "XID 79"})
    metrics = scrape(fake_backend(devices_file))
    assert [(labels["device_index"], value) for labels, value in metrics["krakenplug_device_healthy"]] \
        == [("0", 1.0), ("1", 0.0)]


@pytest.mark.parametrize("enabled", [False, True], ids=["off", "on"])
def test_base_unit_twins(scrape, enabled):
    metrics = scrape(fake_backend(), base_unit_metrics=enabled)
    twins = ("krakenplug_device_utilization_ratio", "krakenplug_device_memory_used_bytes",
             "krakenplug_device_memory_total_bytes")
    if not enabled:
        assert not any(name in metrics for name in twins)
        return
    assert series(metrics, twins[0], device_index="0")[0][1] == pytest.approx(0.375)
    assert series(metrics, twins[1], device_index="0")[0][1] == 20480 * 1048576
    assert series(metrics, twins[2], device_index="0")[0][1] == 81920 * 1048576


def test_pod_map_freshness_metrics(scrape):
    stale = attribution.PodAttribution(up=False, last_success_unix=0.0, error="socket missing")
    metrics = scrape(fake_backend(), StaticPods(stale))
    assert metrics["krakenplug_podresources_up"] == [({}, 0.0)]
    assert metrics["krakenplug_podresources_last_success_timestamp_seconds"] == [({}, 0.0)]
    (labels, value), = metrics["krakenplug_exporter_build_info"]
    assert value == 1.0 and set(labels) == {"version", "python_version"}
    assert labels["version"] == importlib.metadata.version("krakenplug")  # the static _version.py agrees


def test_health_states(tmp_path):
    devices_file = write_devices(tmp_path / "d.yaml")
    collector = make_collector(hub_for(fake_backend(devices_file)), node_name=NODE)
    try:
        assert collector.health(max_age_seconds=60) == (True, "ok")
        write_devices(devices_file, faults={"sample_error": "ECC storm"})
        assert collector.health(max_age_seconds=60) == (True, "ok")  # a recent good collection is enough
        ok, reason = collector.health(max_age_seconds=0)
        assert not ok and "ECC storm" in reason
        write_devices(devices_file)
        assert collector.health(max_age_seconds=0) == (True, "ok")
    finally:
        collector.close()


def test_an_unavailable_backend_serves_a_valid_page_without_devices(scrape, tmp_path):
    missing = FakeBackend(FakeOptions(devices_file=tmp_path / "absent.yaml"))
    with pytest.raises(errors.BackendUnavailable) as raised:
        missing.open()
    metrics = scrape(fallback.RetryingBackend(missing, first_error=raised.value))
    assert series(metrics, "krakenplug_collector_up") == [({"vendor": "fake"}, 0.0)]
    assert not any(name.startswith("krakenplug_device_") for name in metrics)
    assert metrics["krakenplug_podresources_up"] == [({}, 0.0)]


class _Renamed(FakeBackend):
    """A backend registered as "kunlun" whose devices say vendor "kunlunxin"."""

    name = "kunlun"

    def devices(self):
        return tuple(dataclasses.replace(device, vendor="kunlunxin") for device in super().devices())


def test_collector_metrics_use_the_devices_vendor_label(scrape):
    metrics = scrape(_opened(_Renamed))
    assert series(metrics, "krakenplug_collector_up") == [({"vendor": "kunlunxin"}, 1.0)]
    assert {labels["vendor"] for labels, _ in metrics["krakenplug_device_util"]} == {"kunlunxin"}


class _CountingDevices(FakeBackend):
    """Counts devices() calls: only the hub may make them."""

    calls = 0

    def devices(self):
        type(self).calls += 1
        return super().devices()


def test_devices_and_health_come_from_the_hub_snapshot_not_the_backend(tmp_path):
    devices_file = write_devices(tmp_path / "d.yaml", 2)
    backend = _CountingDevices(FakeOptions(devices_file=devices_file))
    backend.open()
    hub = hub_for(backend)
    collector = make_collector(hub, node_name=NODE)
    registry = build_registry(collector)

    def healthy() -> dict[str, float]:
        text = generate_latest(registry).decode()
        return {sample.labels["device_index"]: sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples if family.name == "krakenplug_device_healthy"}

    try:
        calls_after_hub = _CountingDevices.calls
        assert healthy() == {"0": 1.0, "1": 1.0}
        write_devices(devices_file, 2, device1={"health": "Unhealthy", "health_reason": "XID 79"})
        assert healthy() == {"0": 1.0, "1": 1.0}  # the hub has not published the change yet
        assert _CountingDevices.calls == calls_after_hub  # scrapes never list devices themselves
        hub.refresh()
        assert healthy() == {"0": 1.0, "1": 0.0}
    finally:
        collector.close()


def test_no_snapshot_yet_is_not_up():
    backend = fake_backend()
    collector = make_collector(DeviceHub(backend), node_name=NODE)  # a hub that never read the backend
    try:
        reading = collector.read()
        assert reading.error == "no device snapshot yet" and not reading.usable
        assert collector.health(max_age_seconds=60) == (False, "last collection failed: no device snapshot yet")
    finally:
        collector.close()

"""The exporter's collector: one scrape = the hub's devices + fresh samples + the cached pod map.

``DeviceCollector`` follows prometheus_client's Collector protocol (``collect()`` yields new
``GaugeMetricFamily`` objects each time, nothing is kept between scrapes), so it can be registered in
any ``CollectorRegistry``; ``build_registry`` gives it one of its own, never the global REGISTRY.
``/metrics`` is prometheus_client's own exposition of that registry.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from krakenplug import __version__, resource_names
from krakenplug.exporter import families
from krakenplug.exporter.attribution import PodAttribution
from krakenplug.exporter.reader import Reading, VendorReader
from krakenplug.hub import DeviceHub

__all__ = ["DeviceCollector", "PodSource", "StaticPods", "build_registry", "make_collector"]


class PodSource(Protocol):
    """Where the collector learns which pods use which devices (the PodResources watcher)."""

    def current(self) -> PodAttribution: ...


class StaticPods:
    """A fixed pod map: no kubelet (the pod labels stay empty), or a given one in tests."""

    def __init__(self, attribution: PodAttribution | None = None) -> None:
        self._attribution = attribution or PodAttribution(error="pod attribution is disabled")

    def current(self) -> PodAttribution:
        return self._attribution


class DeviceCollector:
    """Reads the backend (bounded) and the pod map on every scrape; keeps only health bookkeeping."""

    def __init__(self, reader: VendorReader, pods: PodSource, *, node_name: str, backend_name: str,
                 base_unit_metrics: bool = False, version: str = __version__, python_version: str | None = None,
                 dra_driver: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self._reader = reader
        self._pods = pods
        self._vendor = backend_name
        self._builder = families.FamilyBuilder(node_name=node_name, base_unit_metrics=base_unit_metrics,
                                               version=version, python_version=python_version or platform.python_version(),
                                               dra_driver=dra_driver)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_usable: float | None = None

    def scrape(self) -> list[families.Family]:
        """One collection, as plain families."""
        reading = self.read()
        return self._builder.build(reading, self._pods.current(), vendor=self._vendor)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return to_metric_families(self.scrape())

    def describe(self) -> list[GaugeMetricFamily]:
        # Registering must not trigger vendor reads (prometheus_client calls collect() without this).
        return []

    def read(self) -> Reading:
        """A vendor reading; also what /healthz looks at."""
        reading = self._reader.read()
        with self._lock:
            if reading.devices:
                # The collector's vendor label follows the devices' own, so both kinds of series join.
                self._vendor = reading.devices[0].vendor
            if reading.usable:
                self._last_usable = self._clock()
        return reading

    def health(self, *, max_age_seconds: float) -> tuple[bool, str]:
        """(True, "ok") when a usable reading is at most ``max_age_seconds`` old (reading now if needed)."""
        with self._lock:
            recent = self._last_usable is not None and self._clock() - self._last_usable <= max_age_seconds
        if recent:
            return True, "ok"
        reading = self.read()
        if reading.usable:
            return True, "ok"
        return False, f"last collection failed: {reading.problem()}"

    def close(self) -> None:
        self._reader.close()


def to_metric_families(scraped: Iterable[families.Family]) -> Iterator[GaugeMetricFamily]:
    """prometheus_client's view of plain families (fresh objects each time)."""
    for family in scraped:
        metric = GaugeMetricFamily(family.name, family.documentation, labels=list(family.labelnames))
        for labels, value in family.samples:
            metric.add_metric(list(labels), value)
        yield metric


def build_registry(collector: DeviceCollector) -> CollectorRegistry:
    """A registry of its own holding ``collector`` (prometheus_client's global REGISTRY stays untouched)."""
    # No names from describe() (that would need a vendor read); the flag keeps name[] filtering working.
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(collector)
    return registry


def make_collector(hub: DeviceHub, *, node_name: str, pods: PodSource | None = None,
                   timeout_seconds: float = 3.0, base_unit_metrics: bool = False,
                   version: str = __version__, python_version: str | None = None,
                   dra_driver: str | None = None) -> DeviceCollector:
    """A collector over the hub's devices with its own vendor reader (close it with ``collector.close()``).

    ``dra_driver`` is the name of our DRA driver for this backend (None: the default name).
    """
    reader = VendorReader(hub.backend, hub.snapshot, timeout_seconds=timeout_seconds)
    driver = dra_driver if dra_driver is not None else resource_names.driver_name(None, hub.name)
    return DeviceCollector(reader, pods or StaticPods(), node_name=node_name, backend_name=hub.name,
                           base_unit_metrics=base_unit_metrics, version=version, python_version=python_version,
                           dra_driver=driver)

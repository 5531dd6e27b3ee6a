"""The exporter assembled from its parts: pod map watcher, collector, renderer and HTTP server."""

from __future__ import annotations

import logging

from krakenplug.backends import base
from krakenplug.exporter.collector import DeviceCollector, make_collector
from krakenplug.exporter.exposition import TextRenderer
from krakenplug.exporter.podresources import PodResourcesWatcher
from krakenplug.exporter.server import MetricsServer, Routes
from krakenplug.settings import Settings

logger = logging.getLogger(__name__)

# /healthz reads the backend itself only when no scrape succeeded for this long; liveness probes
# then keep working on a node that nobody scrapes, and cost nothing on a node that is scraped.
HEALTH_MAX_AGE_SECONDS = 60.0


class Exporter:
    """Everything ``run`` starts; construction binds the port (a bad address fails here)."""

    def __init__(self, settings: Settings, backend: base.Backend) -> None:
        config = settings.exporter
        self.watcher = PodResourcesWatcher(config.pod_resources_socket,
                                           refresh_seconds=config.pod_resources_refresh_seconds)
        self.collector: DeviceCollector = make_collector(
            backend, node_name=settings.node_name, pods=self.watcher,
            timeout_seconds=config.collect_timeout_seconds, base_unit_metrics=config.base_unit_metrics,
        )
        self.renderer = TextRenderer()
        self.server = MetricsServer(config.address, Routes(
            metrics=self.metrics, health=self.health, title=f"KrakenPlug exporter on {settings.node_name}"))

    def metrics(self) -> bytes:
        return self.renderer.render(self.collector.scrape())

    def health(self) -> tuple[bool, str]:
        return self.collector.health(max_age_seconds=HEALTH_MAX_AGE_SECONDS)

    def start(self) -> None:
        self.watcher.start()
        self.server.start()

    def close(self) -> None:
        self.server.stop()
        self.watcher.close()
        self.collector.close()

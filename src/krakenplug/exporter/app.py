"""The exporter assembled from its parts: pod map watcher, collector, registry, WSGI app and HTTP server."""

from __future__ import annotations

import logging

from krakenplug import resource_names
from krakenplug.exporter.collector import DeviceCollector, build_registry, make_collector
from krakenplug.exporter.podresources import PodResourcesWatcher
from krakenplug.exporter.routes import make_app
from krakenplug.exporter.server import Limits, MetricsServer
from krakenplug.exporter.webconfig import WebConfigSource
from krakenplug.hub import DeviceHub
from krakenplug.settings import Settings

logger = logging.getLogger(__name__)

# /healthz reads the backend itself only when no scrape succeeded for this long; liveness probes
# then keep working on a node that nobody scrapes, and cost nothing on a node that is scraped.
HEALTH_MAX_AGE_SECONDS = 60.0
# Time to write an answer on top of the vendor reads (a slow reader of an 80 KB page).
_WRITE_ALLOWANCE_SECONDS = 30.0


class Exporter:
    """Everything ``run`` starts; construction reads the web config and binds the port (errors fail here)."""

    def __init__(self, settings: Settings, hub: DeviceHub) -> None:
        config = settings.exporter
        self.web = WebConfigSource(config.web_config_file)
        self.watcher = PodResourcesWatcher(config.pod_resources_socket,
                                           refresh_seconds=config.pod_resources_refresh_seconds)
        self.collector: DeviceCollector = make_collector(
            hub, node_name=settings.node_name, pods=self.watcher,
            timeout_seconds=config.collect_timeout_seconds, base_unit_metrics=config.base_unit_metrics,
            dra_driver=resource_names.driver_name(settings.dra.driver_name, settings.backend),
        )
        app = make_app(build_registry(self.collector), health=self.health, security=self.web.current,
                       families=self.collector.scrape, title=f"KrakenPlug exporter on {settings.node_name}")
        limits = Limits(request_timeout=config.request_timeout_seconds,
                        answer_timeout=config.collect_timeout_seconds + _WRITE_ALLOWANCE_SECONDS)
        self.server = MetricsServer(config.address, app, limits=limits,
                                    tls=lambda: self.web.current().ssl_context)

    def health(self) -> tuple[bool, str]:
        return self.collector.health(max_age_seconds=HEALTH_MAX_AGE_SECONDS)

    def start(self) -> None:
        self.watcher.start()
        self.server.start()

    def close(self) -> None:
        self.server.stop()
        self.watcher.close()
        self.collector.close()

"""The Prometheus exporter component: device metrics with pod attribution for every vendor.

``run(settings, hub, stop)`` is what ``krakenplug run`` calls. For tests and embedding,
``make_collector`` + ``build_registry`` give a prometheus_client collector in a registry of its own.
"""

from __future__ import annotations

import logging
import threading

from krakenplug.exporter.app import Exporter
from krakenplug.exporter.collector import (
    DeviceCollector,
    StaticPods,
    build_registry,
    make_collector,
)
from krakenplug.hub import DeviceHub
from krakenplug.settings import Settings

__all__ = ["DeviceCollector", "Exporter", "StaticPods", "build_registry", "make_collector", "run"]

logger = logging.getLogger(__name__)


def run(settings: Settings, hub: DeviceHub, stop: threading.Event) -> None:
    """Serves metrics on ``settings.exporter.address`` until ``stop`` is set, then frees the port."""
    exporter = Exporter(settings, hub)
    exporter.start()
    try:
        stop.wait()
    finally:
        exporter.close()
        logger.info("exporter stopped")

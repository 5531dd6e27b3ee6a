"""Why the exporter keeps one hand-written piece: prometheus_client's exposition vs the fast renderer.

Both answer the same /metrics request of a node with 64 devices and 200 pods through the exporter's own
WSGI app, in this process (no HTTP, no other process): once with prometheus_client's ``make_wsgi_app``
alone, once with the fast renderer for the formats Prometheus negotiates (tests keep the bytes equal).
Calls alternate, so that load from elsewhere hits both alike. The bar (issue 8): keep the renderer only
if the library alone cannot hold scrape p99 <= 25 ms; bench/exporter_scrape.py measures whole scrapes.

Run: python bench/exporter_render.py [--calls 300] [--devices 64] [--pods 200] [--text]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exporter_common import PROMETHEUS_HEADERS, percentile, pods_answer, write_devices

from krakenplug.backends.fake import FakeBackend, FakeOptions
from krakenplug.exporter import attribution, build_registry, make_collector
from krakenplug.exporter.collector import StaticPods
from krakenplug.exporter.routes import make_app
from krakenplug.hub import DeviceHub


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--text", action="store_true", help="ask for text 0.0.4 instead of Prometheus's headers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kp-bench-", dir="/tmp") as scratch:
        backend = FakeBackend(FakeOptions(devices_file=write_devices(Path(scratch) / "devices.yaml", args.devices)))
        backend.open()
        hub, stop = DeviceHub(backend), threading.Event()
        hub.start(stop)  # as in the agent: the backend's own watcher, no file checks per sample
        pods = attribution.PodAttribution(allocations=attribution.flatten(pods_answer(args.pods, args.devices)),
                                          up=True, last_success_unix=time.time())
        collector = make_collector(hub, node_name="bench-node", pods=StaticPods(pods))
        registry = build_registry(collector)
        health = lambda: (True, "ok")  # noqa: E731
        apps = {"prometheus_client": make_app(registry, health=health, title="bench"),
                "fast renderer": make_app(registry, health=health, title="bench", families=collector.scrape)}
        headers = {} if args.text else PROMETHEUS_HEADERS
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": "",
                   "HTTP_ACCEPT": headers.get("Accept", ""), "HTTP_ACCEPT_ENCODING": headers.get("Accept-Encoding", "")}
        times: dict[str, list[float]] = {name: [] for name in apps}
        sizes: dict[str, int] = {}
        try:
            for call in range(args.calls + 20):  # the first 20 warm caches up and are not counted
                for name, app in apps.items():
                    started = time.perf_counter()
                    body = b"".join(app(dict(environ), lambda *_: None))
                    if call >= 20:
                        times[name].append(time.perf_counter() - started)
                    sizes[name] = len(body)
        finally:
            collector.close()
            hub.stop_waiters(stop)
            hub.join()
            backend.close()

    fmt = "text 0.0.4" if args.text else "OpenMetrics 1.0.0, gzip (Prometheus's headers)"
    print(f"node: {args.devices} devices, {args.pods} pods; {args.calls} calls each; {fmt}")
    for name, measured in times.items():
        print(f"{name:18s} p50 {percentile(measured, 0.5) * 1e3:7.3f} ms  p99 {percentile(measured, 0.99) * 1e3:7.3f} ms"
              f"  ({sizes[name]} bytes)")
    library, fast = times["prometheus_client"], times["fast renderer"]
    print(f"ratio library/fast p50 {percentile(library, 0.5) / percentile(fast, 0.5):5.1f}x"
          f"  p99 {percentile(library, 0.99) / percentile(fast, 0.99):5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

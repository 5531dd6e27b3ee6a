"""Scrape latency and cost of the exporter, as ratios against references measured in the same run.

1. Latency: p50/p99 of scrapes of a node with 64 devices and 200 pods (time-slicing replicas), against
   the same HTTP server serving a pre-rendered payload of the same size in its own process.
   Scrapes alternate between the two servers, so that load from elsewhere hits both alike.
   Target: p99 <= 25 ms with prometheus_client's own exposition (issue 8: a hand-written renderer
   only if the library cannot hold that); the ratio to the reference is printed for comparison.
2. Rate: CPU per scrape (idle CPU subtracted) and p50 latency at 1 scrape/s and at 20 scrapes/s.
   Target: flat (the 20/s cost per scrape within 1.5x of the 1/s one).

Run: python bench/exporter_scrape.py [--quick] [--devices 64] [--pods 200] [--as-prometheus]
(--as-prometheus sends Prometheus 3's Accept and Accept-Encoding headers: OpenMetrics, gzipped.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exporter_common import PROMETHEUS_HEADERS, Scraper, cpu_seconds, node, percentile, static_server


def warm_up(port: int, count: int = 200) -> bytes:
    scraper = Scraper(port)
    try:
        for _ in range(count):  # caches, connection thread, allocator
            body = scraper.get()
        return body
    finally:
        scraper.close()


def interleaved(first_port: int, second_port: int, count: int) -> tuple[list[float], list[float]]:
    first, second = Scraper(first_port), Scraper(second_port)
    try:
        first_times, second_times = [], []
        for _ in range(count):
            first_times += first.timed(1)
            second_times += second.timed(1)
        return first_times, second_times
    finally:
        first.close()
        second.close()


def cost_at_rate(port: int, pid: int, rate: float, seconds: float, idle_cpu_per_second: float) -> tuple[float, float]:
    """(CPU seconds per scrape without the idle share, p50 latency) at ``rate`` scrapes per second."""
    scraper = Scraper(port)
    try:
        scraper.get()
        count = max(1, int(rate * seconds))
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        latencies = scraper.timed(count, interval=1.0 / rate)
        elapsed, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu_before
    finally:
        scraper.close()
    return (cpu - idle_cpu_per_second * elapsed) / count, percentile(latencies, 0.5)


def idle_cpu(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="fewer scrapes and shorter rate windows")
    parser.add_argument("--as-prometheus", action="store_true",
                        help="send Prometheus's headers (OpenMetrics, gzip) instead of none (text 0.0.4)")
    args = parser.parse_args()
    if args.as_prometheus:
        Scraper.headers = PROMETHEUS_HEADERS
    scrapes = 300 if args.quick else args.scrapes
    slow_window, fast_window, idle_window = (5.0, 3.0, 3.0) if args.quick else (30.0, 10.0, 15.0)

    with node(args.devices, args.pods) as (port, pid, _kubelet):
        body = warm_up(port)
        with static_server(body) as (static_port, _):
            warm_up(static_port)
            ours, reference = interleaved(port, static_port, scrapes)
        idle = idle_cpu(pid, idle_window)
        cpu_slow, p50_slow = cost_at_rate(port, pid, 1.0, slow_window, idle)
        cpu_fast, p50_fast = cost_at_rate(port, pid, 20.0, fast_window, idle)

    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    p50, p99 = percentile(ours, 0.5) * 1e3, percentile(ours, 0.99) * 1e3
    ref50, ref99 = percentile(reference, 0.5) * 1e3, percentile(reference, 0.99) * 1e3
    print(f"node: {args.devices} devices, {args.pods} pods -> {series} series, {len(body)} bytes; {scrapes} scrapes")
    print(f"exporter      p50 {p50:6.3f} ms  p99 {p99:6.3f} ms")
    print(f"pre-rendered  p50 {ref50:6.3f} ms  p99 {ref99:6.3f} ms")
    print(f"ratio         p50 {p50 / ref50:5.2f}x    p99 {p99 / ref99:5.2f}x   (target: exporter p99 <= 25 ms)")
    print(f"idle CPU      {idle * 1e3:6.3f} ms per second")
    print(f"1 scrape/s    CPU {cpu_slow * 1e3:6.3f} ms/scrape  p50 {p50_slow * 1e3:6.3f} ms")
    print(f"20 scrapes/s  CPU {cpu_fast * 1e3:6.3f} ms/scrape  p50 {p50_fast * 1e3:6.3f} ms")
    print(f"rate ratio    CPU {cpu_fast / cpu_slow:5.2f}x  p50 {p50_fast / p50_slow:5.2f}x   (target flat: <= 1.5x)")
    met = p99 <= 25 and cpu_fast / cpu_slow <= 1.5
    print("targets met" if met else "TARGETS MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

"""Exporter memory: RSS of a real agent process (exporter only), and whether it grows with use.

A node with 64 devices and 200 pods; the kubelet's answer changes every refresh (all pods replaced, as
on a node running short jobs), which is where stale series or caches would pile up. The exporter is
scraped back to back for two windows of --seconds each; RSS is read after warm-up and after each
window, and the growth over the second window is the ratio to watch (target <= 1.10). The reference is the same HTTP server class serving a fixed
payload in its own process (Python + prometheus_client + our server), read the same way.
Target: exporter RSS < 100 MiB.

Run: python bench/exporter_memory.py [--seconds 15] [--devices 64] [--pods 200]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exporter_common import Scraper, memory_kib, node, pods_answer, static_server


def scrape(port: int, *, count: int = 0, seconds: float = 0.0) -> tuple[bytes, int]:
    """Scrapes ``count`` times, or for ``seconds``; returns the last body and the number of scrapes."""
    scraper, done = Scraper(port), 0
    deadline = time.monotonic() + seconds
    try:
        while done < count or time.monotonic() < deadline:
            body = scraper.get()
            done += 1
        return body, done
    finally:
        scraper.close()


def churn(kubelet, devices: int, pods: int, stop: threading.Event) -> None:
    """Replaces every pod twice a second (the exporter refreshes once a second)."""
    generation = 0
    while not stop.wait(0.5):
        generation += 1
        kubelet.answer = pods_answer(pods, devices, generation=generation)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each of the two windows")
    args = parser.parse_args()

    with node(args.devices, args.pods, refresh_seconds=1.0) as (port, pid, kubelet):
        body, _ = scrape(port, count=100)
        warm = memory_kib(pid)
        stop = threading.Event()
        churner = threading.Thread(target=churn, args=(kubelet, args.devices, args.pods, stop))
        churner.start()
        try:
            _, first = scrape(port, seconds=args.seconds)
            middle = memory_kib(pid)
            _, second = scrape(port, seconds=args.seconds)
            end = memory_kib(pid)
        finally:
            stop.set()
            churner.join()
        list_calls = kubelet.calls
    with static_server(body) as (static_port, static_pid):
        scrape(static_port, count=100 + first + second)
        reference = memory_kib(static_pid)

    mib = lambda kib: kib / 1024
    growth = end["VmRSS"] / middle["VmRSS"]
    print(f"node: {args.devices} devices, {args.pods} pods replaced twice a second; "
          f"{first} + {second} scrapes, {list_calls} PodResources List calls")
    print(f"exporter RSS    after warm-up {mib(warm['VmRSS']):6.1f} MiB, after window 1 "
          f"{mib(middle['VmRSS']):6.1f} MiB, after window 2 {mib(end['VmRSS']):6.1f} MiB "
          f"(peak {mib(end['VmHWM']):6.1f} MiB)")
    print(f"reference RSS   {mib(reference['VmRSS']):6.1f} MiB (same server, fixed payload, same scrape count)")
    print(f"ratios          exporter/reference {end['VmRSS'] / reference['VmRSS']:4.2f}x, "
          f"growth over the second half {growth:5.3f}x (target <= 1.10)")
    met = growth <= 1.10 and mib(end["VmRSS"]) < 100
    print("targets met" if met else "TARGETS MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

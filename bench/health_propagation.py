"""Fault injection to kubelet: a device's health flips in the fake devices file until the kubelet
simulator (through ListAndWatch) sees the new health. Target: p99 below 250 ms.

The fake backend checks its file every 50 ms (its watch_interval_seconds) and reports a change
through SupportsHealthEvents; the plugin then re-reads the devices and pushes a snapshot at once.

    python bench/health_propagation.py [--flips 60]
"""

from __future__ import annotations

import argparse
import random
import time

from _common import RESOURCE, agent, describe, percentile, workdir, write_devices

from krakenplug.testing.kubelet import KubeletSimulator

TARGET_SECONDS = 0.250


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=60)
    args = parser.parse_args()
    samples = []
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        devices_file = directory / "devices.yaml"
        write_devices(devices_file, 8)
        with agent(directory, devices_file):
            kubelet.wait_for_resource(RESOURCE, allocatable=8, timeout=30)
            for flip in range(args.flips):
                unhealthy = flip % 2 == 0
                time.sleep(random.uniform(0.0, 0.1))  # edits land anywhere in the backend's poll period
                start = time.perf_counter()
                write_devices(devices_file, 8, unhealthy=(3,) if unhealthy else ())
                kubelet.wait_for_resource(RESOURCE, allocatable=7 if unhealthy else 8, timeout=10)
                samples.append(time.perf_counter() - start)
    p99 = percentile(samples, 0.99)
    print(describe("file edit -> kubelet sees new health", samples))
    print(f"ratio p99 / target = {p99 / TARGET_SECONDS:.2f} (target p99 < {TARGET_SECONDS * 1000:.0f} ms, ratio < 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

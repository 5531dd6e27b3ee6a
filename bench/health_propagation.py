"""Fault injection to kubelet: a device's health flips in the fake devices file until the kubelet
simulator (through ListAndWatch) sees the new health. Target: p50 at most 5 ms.

The fake backend is woken by inotify when the file is replaced, tells the device hub, and the plugin
pushes the new snapshot to its ListAndWatch streams at once; nothing on this path polls.

    python bench/health_propagation.py [--flips 60]
"""

from __future__ import annotations

import os
import random
import time

from _common import RESOURCE, Targets, agent, describe, option, percentile, workdir, write_devices

from krakenplug.testing.kubelet import KubeletSimulator

TARGET_SECONDS = 0.005


def main() -> int:
    flips = option(__doc__, "flips", 60)
    samples = []
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        devices_file = directory / "devices.yaml"
        write_devices(devices_file, 8)
        with agent(directory, devices_file):
            kubelet.wait_for_resource(RESOURCE, allocatable=8, timeout=30)
            staged = directory / "staged.yaml"
            for flip in range(flips):
                unhealthy = flip % 2 == 0
                write_devices(staged, 8, unhealthy=(3,) if unhealthy else ())  # rendered before the clock starts
                time.sleep(random.uniform(0.02, 0.1))  # let the previous flip settle; no period to line up with
                start = time.perf_counter()
                os.replace(staged, devices_file)  # an atomic edit, as editors and kubectl cp make
                kubelet.wait_for_resource(RESOURCE, allocatable=7 if unhealthy else 8, timeout=10)
                samples.append(time.perf_counter() - start)
    print(describe("file edit -> kubelet sees new health", samples))
    targets = Targets()
    p50 = percentile(samples, 0.5)
    targets.check("health change -> ListAndWatch p50", p50 * 1e3, TARGET_SECONDS * 1e3, unit=" ms",
                  ratio=p50 / TARGET_SECONDS)
    return targets.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())

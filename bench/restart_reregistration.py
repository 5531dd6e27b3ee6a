"""Kubelet restart to re-registration: the simulator restarts (every socket in the directory deleted,
kubelet.sock created anew) until the plugin has registered again and its devices are back.
Target: below 2 s. The plugin polls the directory every 250 ms.

    python bench/restart_reregistration.py [--restarts 20]
"""

from __future__ import annotations

import argparse
import time

from _common import RESOURCE, agent, describe, percentile, workdir, write_devices

from krakenplug.testing.kubelet import KubeletSimulator

TARGET_SECONDS = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=20)
    args = parser.parse_args()
    samples = []
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        write_devices(directory / "devices.yaml", 8)
        # Every restart here is deliberate: lift the crash-loop guard above the number of restarts.
        guard = {"KRAKENPLUG_PLUGIN__RESTART_LIMIT": str(args.restarts + 10)}
        with agent(directory, directory / "devices.yaml", env=guard):
            kubelet.wait_for_resource(RESOURCE, allocatable=8, timeout=30)
            for _ in range(args.restarts):
                registrations = len(kubelet.registrations)
                start = time.perf_counter()
                kubelet.restart()
                kubelet.wait_for(lambda r, before=registrations: len(kubelet.registrations) > before
                                 and r[RESOURCE].connected and r[RESOURCE].allocatable == 8, timeout=30)
                samples.append(time.perf_counter() - start)
                time.sleep(0.2)
    p99 = percentile(samples, 0.99)
    print(describe("kubelet restart -> registered with devices", samples))
    print(f"ratio p99 / target = {p99 / TARGET_SECONDS:.2f} (target < {TARGET_SECONDS:g} s, ratio < 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

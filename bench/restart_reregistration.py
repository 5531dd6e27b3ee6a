"""Kubelet restart to re-registration: the simulator restarts (every socket in the directory deleted,
kubelet.sock created anew) until the plugin has registered again and its devices are back.

Target: Register arrives at most 10 ms (p50) after the new kubelet.sock appears. The plugin learns of it
through inotify on the directory; the gap between restarts is random, so nothing can line up with a
period. Also printed: the time until the kubelet has the devices back (information).

    python bench/restart_reregistration.py [--restarts 30]
"""

from __future__ import annotations

import random
import time

from _common import RESOURCE, Targets, agent, describe, option, percentile, workdir, write_devices

from krakenplug.testing.kubelet import KubeletSimulator

TARGET_SECONDS = 0.010


def main() -> int:
    restarts = option(__doc__, "restarts", 30)
    registered, recovered = [], []
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        write_devices(directory / "devices.yaml", 8)
        with agent(directory, directory / "devices.yaml"):
            kubelet.wait_for_resource(RESOURCE, allocatable=8, timeout=30)
            for _ in range(restarts):
                time.sleep(random.uniform(0.05, 0.5))
                before = len(kubelet.registrations)
                kubelet.stop()
                kubelet.start()  # kubelet.sock exists once this returns
                appeared = time.perf_counter()
                kubelet.wait_for(lambda r, n=before: len(kubelet.registrations) > n, timeout=30)
                registered.append(time.perf_counter() - appeared)
                kubelet.wait_for(lambda r: r[RESOURCE].connected and r[RESOURCE].allocatable == 8, timeout=30)
                recovered.append(time.perf_counter() - appeared)
    print(describe("new kubelet.sock -> Register received", registered))
    print(describe("new kubelet.sock -> devices back (information)", recovered))
    targets = Targets()
    p50 = percentile(registered, 0.5)
    targets.check("re-registration p50", p50 * 1e3, TARGET_SECONDS * 1e3, unit=" ms", ratio=p50 / TARGET_SECONDS)
    return targets.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())

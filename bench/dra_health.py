"""Health change -> ResourceSlice taint and -> health stream, with the fake backend.

Each round flips one device's health in the fake devices file and times until (a) the API stand-in holds
the slice with the taint set or cleared and (b) the kubelet stand-in's NodeWatchResources stream reports
the new health. Target: p99 of both < 250 ms.

    python bench/dra_health.py [--rounds 40]
"""

from __future__ import annotations

import time

from _common import Targets, describe, option, percentile, workdir, write_devices
from dra_common import DRIVER, dra_agent

TARGET_SECONDS = 0.25


def main() -> int:
    rounds = option(__doc__, "rounds", 40)
    taint, stream = [], []
    with workdir() as directory:
        devices = directory / "devices.yaml"
        write_devices(devices, 8)
        with dra_agent(directory, devices) as node:
            node.kubelet.wait_for(lambda k: len(k.health(DRIVER)) == 8, timeout=30)
            for round_number in range(rounds):
                unhealthy = round_number % 2 == 0
                start = time.perf_counter()
                write_devices(devices, 8, unhealthy=[3] if unhealthy else [])
                seen: dict[str, float] = {}
                deadline = start + 10
                while len(seen) < 2 and time.perf_counter() < deadline:
                    if "taint" not in seen and bool(node.api.slice_devices(driver=DRIVER)["fake-3"].get("taints")) == unhealthy:
                        seen["taint"] = time.perf_counter() - start
                    if "stream" not in seen and node.kubelet.health(DRIVER).get("fake-3") == (
                            "UNHEALTHY" if unhealthy else "HEALTHY"):
                        seen["stream"] = time.perf_counter() - start
                    time.sleep(0.001)
                if len(seen) < 2:
                    raise SystemExit(f"round {round_number}: the change did not arrive within 10 s ({seen})")
                taint.append(seen["taint"])
                stream.append(seen["stream"])
    print(describe("health change -> slice taint", taint))
    print(describe("health change -> health stream", stream))
    targets = Targets()
    for name, samples in (("taint", taint), ("stream", stream)):
        targets.check(f"health change -> {name} p99 / {TARGET_SECONDS * 1000:.0f} ms",
                      percentile(samples, 0.99) / TARGET_SECONDS, 1.0, ratio=percentile(samples, 0.99) / TARGET_SECONDS)
    return targets.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())

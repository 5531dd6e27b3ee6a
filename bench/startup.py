"""Start-up: ``krakenplug run`` (device plugin only, fake backend) from process start until the kubelet
simulator receives its Register. Target: p50 at most 100 ms.

The baseline of the same run is a bare interpreter that only imports what the agent cannot do without
(grpc, pydantic-settings, PyYAML). The slowest imports of the agent, from ``python -X importtime``, are
printed too: they are where start-up time goes.

    python bench/startup.py [--starts 10]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from _common import RESOURCE, Targets, agent, describe, percentile, workdir, write_devices

from krakenplug.testing.kubelet import KubeletSimulator

TARGET_SECONDS = 0.100
FLOOR_IMPORTS = "import grpc, pydantic_settings, yaml"
AGENT_IMPORTS = "import krakenplug.cli, krakenplug.plugin, krakenplug.backends.fake"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10)
    args = parser.parse_args()
    starts, floors = [], []
    for _ in range(args.starts):
        floors.append(_run_python(FLOOR_IMPORTS))
        starts.append(_start_to_register())
    print(describe("process start -> Register received", starts))
    print(describe(f"floor: python -c '{FLOOR_IMPORTS}'", floors))
    _print_slowest_imports()
    targets = Targets()
    p50 = percentile(starts, 0.5)
    print(f"ratio start -> Register p50 / floor p50 = {p50 / percentile(floors, 0.5):.2f}")
    targets.check("start -> Register p50", p50 * 1e3, TARGET_SECONDS * 1e3, unit=" ms", ratio=p50 / TARGET_SECONDS)
    return targets.exit_code()


def _start_to_register() -> float:
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        write_devices(directory / "devices.yaml", 8)
        started = time.perf_counter()
        with agent(directory, directory / "devices.yaml"):
            kubelet.wait_for(lambda r: bool(kubelet.registrations), timeout=30)
            elapsed = time.perf_counter() - started
            kubelet.wait_for_resource(RESOURCE, allocatable=8, timeout=30)  # a complete start, then stop it
        return elapsed


def _run_python(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def _print_slowest_imports(count: int = 8) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", AGENT_IMPORTS], capture_output=True,
                            text=True, check=True, env=environment)
    rows = []
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) <= 3:  # the agent's own imports and the packages they pull in directly
            rows.append((int(match.group(2)), match.group(4).strip()))
    print(f"slowest imports of '{AGENT_IMPORTS}' (cumulative, python -X importtime):")
    for cumulative, name in sorted(rows, reverse=True)[:count]:
        print(f"  {cumulative / 1000:7.1f} ms  {name}")


if __name__ == "__main__":
    raise SystemExit(main())

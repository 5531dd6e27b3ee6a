"""Resident memory of a real ``krakenplug run --backend fake`` process: 16 devices, replicas 4 (64 IDs),
after registration, a few hundred Allocate calls and health flips. Targets: RSS at most 45 MiB for the
device plugin alone, at most 50 MiB with the exporter.

The floor is printed piece by piece, each a bare interpreter that has only imported something: the
interpreter itself, grpc, pydantic-settings (the settings), and everything the agent imports.

    python bench/memory.py
"""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
from _common import RESOURCE, Targets, agent, free_port, rss_mb, workdir, write_devices

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.testing.kubelet import KubeletSimulator

TARGETS_MB = {"plugin only": 45.0, "plugin + exporter": 50.0}
DEVICES, REPLICAS = 16, 4
FLOORS = {
    "python": "pass",
    "python + grpc": "import grpc",
    "python + pydantic-settings": "import pydantic_settings",
    "python + everything the agent imports": "import grpc, krakenplug.cli, krakenplug.plugin, krakenplug.backends.fake",
}


def main() -> int:
    floor = 0.0
    for label, code in FLOORS.items():
        floor = _floor_mb(code)
        print(f"floor, {label}: {floor:.1f} MiB")
    targets = Targets()
    for label, extra in (("plugin only", ("--no-exporter",)),
                         ("plugin + exporter", ("--metrics-address", f"127.0.0.1:{free_port()}"))):
        current, peak = _measure(extra)
        print(f"{label}: rss={current:.1f} MiB peak={peak:.1f} MiB; ratio rss / last floor = {current / floor:.2f}")
        targets.check(f"RSS, {label}", current, TARGETS_MB[label], unit=" MiB", ratio=current / TARGETS_MB[label])
    return targets.exit_code()


def _measure(extra: tuple[str, ...]) -> tuple[float, float]:
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        devices_file = directory / "devices.yaml"
        write_devices(devices_file, DEVICES)
        with agent(directory, devices_file, replicas=REPLICAS, extra=extra) as process:
            state = kubelet.wait_for_resource(RESOURCE, allocatable=DEVICES * REPLICAS, timeout=30)
            with grpc.insecure_channel(f"unix://{directory / state.endpoint}") as channel:
                stub = dp_grpc.DevicePluginStub(channel)
                for i in range(500):
                    ids = [f"fake-{i % DEVICES}::{i % REPLICAS}"]
                    stub.Allocate(dp_pb2.AllocateRequest(container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=ids)]))
            for flip in range(10):
                write_devices(devices_file, DEVICES, unhealthy=(1,) if flip % 2 == 0 else ())
                expected = (DEVICES - 1) * REPLICAS if flip % 2 == 0 else DEVICES * REPLICAS
                kubelet.wait_for_resource(RESOURCE, allocatable=expected, timeout=10)
            time.sleep(0.5)
            return rss_mb(process.pid)


def _floor_mb(imports: str) -> float:
    code = (f"{imports}; from pathlib import Path; "
            "print(int([l for l in Path('/proc/self/status').read_text().splitlines() "
            "if l.startswith('VmRSS')][0].split()[1]))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 1024


if __name__ == "__main__":
    raise SystemExit(main())

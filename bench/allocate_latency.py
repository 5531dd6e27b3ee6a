"""Allocate round trip vs the floor of an empty unary call on the same plugin socket.

The floor is GetDevicePluginOptions, which does no work at all; the two calls are interleaved so both
see the same machine state. Target: Allocate p99 within 1.5x of the floor's p99.

    python bench/allocate_latency.py [--calls 3000]
"""

from __future__ import annotations

import argparse

import grpc
from _common import RESOURCE, agent, describe, percentile, timed, workdir, write_devices

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.testing.kubelet import KubeletSimulator

TARGET = 1.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        write_devices(directory / "devices.yaml", 8)
        with agent(directory, directory / "devices.yaml"):
            state = kubelet.wait_for_resource(RESOURCE, allocatable=8, timeout=30)
            with grpc.insecure_channel(f"unix://{directory / state.endpoint}") as channel:
                stub = dp_grpc.DevicePluginStub(channel)
                floor, allocate = _measure(stub, args.calls)
    ratio = percentile(allocate, 0.99) / percentile(floor, 0.99)
    print(describe("floor (GetDevicePluginOptions)", floor))
    print(describe("Allocate (1 device)", allocate))
    print(f"ratio Allocate p99 / floor p99 = {ratio:.2f} (target <= {TARGET})")
    return 0


def _measure(stub: dp_grpc.DevicePluginStub, calls: int) -> tuple[list[float], list[float]]:
    empty = dp_pb2.Empty()
    requests = [dp_pb2.AllocateRequest(container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=[f"fake-{i}"])])
                for i in range(8)]
    for i in range(200):  # warm-up: connections, code paths, allocator
        stub.GetDevicePluginOptions(empty)
        stub.Allocate(requests[i % 8])
    floor, allocate = [], []
    for i in range(calls):
        floor.append(timed(stub.GetDevicePluginOptions, empty))
        allocate.append(timed(stub.Allocate, requests[i % 8]))
    return floor, allocate


if __name__ == "__main__":
    raise SystemExit(main())

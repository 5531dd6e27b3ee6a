"""Allocate and GetPreferredAllocation round trips vs the floor of an empty unary call on the same socket.

The floor is GetDevicePluginOptions, which does no work at all; the three calls are interleaved call by
call so all see the same machine state. Targets: the per-call work above the floor at most 15%
(p50 of each call / p50 of the floor <= 1.15). Also printed: the agent's CPU per 1,000 Allocates.

    python bench/allocate_latency.py [--calls 3000]
"""

from __future__ import annotations


import grpc
from _common import (RESOURCE, Targets, agent, cpu_seconds, describe, option, percentile, timed, workdir,
                     write_devices)

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.testing.kubelet import KubeletSimulator

TARGET = 1.15
DEVICES = 8


def main() -> int:
    calls = option(__doc__, "calls", 3000)
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        write_devices(directory / "devices.yaml", DEVICES)
        with agent(directory, directory / "devices.yaml") as process:
            state = kubelet.wait_for_resource(RESOURCE, allocatable=DEVICES, timeout=30)
            with grpc.insecure_channel(f"unix://{directory / state.endpoint}") as channel:
                stub = dp_grpc.DevicePluginStub(channel)
                samples = _measure(stub, calls)
                cpu_per_1000 = _allocate_cpu(stub, process.pid, 1000)
    targets = Targets()
    floor = samples["floor (GetDevicePluginOptions)"]
    for name, values in samples.items():
        print(describe(name, values))
    for name in ("Allocate (1 device)", "GetPreferredAllocation (1 of 8)"):
        ratio = percentile(samples[name], 0.5) / percentile(floor, 0.5)
        p99 = percentile(samples[name], 0.99) / percentile(floor, 0.99)
        print(f"{name}: p50 / floor p50 = {ratio:.3f}, p99 / floor p99 = {p99:.3f}")
        targets.check(f"{name} p50 / floor p50", ratio, TARGET)
    print(f"agent CPU per 1,000 Allocates: {cpu_per_1000 * 1e6:.0f} ms (information)")
    return targets.exit_code()


def _requests() -> tuple[list[dp_pb2.AllocateRequest], dp_pb2.PreferredAllocationRequest]:
    allocate = [dp_pb2.AllocateRequest(container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=[f"fake-{i}"])])
                for i in range(DEVICES)]
    preferred = dp_pb2.PreferredAllocationRequest(container_requests=[dp_pb2.ContainerPreferredAllocationRequest(
        available_deviceIDs=[f"fake-{i}" for i in range(DEVICES)], allocation_size=1)])
    return allocate, preferred


def _measure(stub: dp_grpc.DevicePluginStub, calls: int) -> dict[str, list[float]]:
    empty = dp_pb2.Empty()
    allocate, preferred = _requests()
    for i in range(200):  # warm-up: connections, code paths, allocator
        stub.GetDevicePluginOptions(empty)
        stub.Allocate(allocate[i % DEVICES])
        stub.GetPreferredAllocation(preferred)
    floor: list[float] = []
    allocated: list[float] = []
    chosen: list[float] = []
    for i in range(calls):  # rotate the order call by call, so no call always runs right after another
        order = ((floor, stub.GetDevicePluginOptions, empty), (allocated, stub.Allocate, allocate[i % DEVICES]),
                 (chosen, stub.GetPreferredAllocation, preferred))
        for position in range(3):
            samples, call, request = order[(i + position) % 3]
            samples.append(timed(call, request))
    return {"floor (GetDevicePluginOptions)": floor, "Allocate (1 device)": allocated,
            "GetPreferredAllocation (1 of 8)": chosen}


def _allocate_cpu(stub: dp_grpc.DevicePluginStub, pid: int, calls: int) -> float:
    allocate, _ = _requests()
    before = cpu_seconds(pid)
    for i in range(calls):
        stub.Allocate(allocate[i % DEVICES])
    return (cpu_seconds(pid) - before) / calls


if __name__ == "__main__":
    raise SystemExit(main())

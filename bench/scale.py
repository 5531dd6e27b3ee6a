"""Scale: 128 devices x 8 replicas (1024 IDs) against 8 devices without replicas, same run.

Measures opening ListAndWatch until the full snapshot has arrived, Allocate of one ID, and (for
information) GetPreferredAllocation of 4 IDs out of all of them. Target: the large node within 2x of
the small one for the ListAndWatch snapshot and Allocate.

    python bench/scale.py [--calls 1000]
"""

from __future__ import annotations


import grpc
from _common import RESOURCE, agent, describe, option, percentile, timed, workdir, write_devices

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.testing.kubelet import KubeletSimulator

TARGET = 2.0


def main() -> int:
    calls = option(__doc__, "calls", 1000)
    small = _measure(devices=8, replicas=1, calls=calls)
    large = _measure(devices=128, replicas=8, calls=calls)
    for name in small:
        print(describe(f"{name}, 8 devices", small[name]))
        print(describe(f"{name}, 128 devices x 8 replicas", large[name]))
        p50 = percentile(large[name], 0.5) / percentile(small[name], 0.5)
        p99 = percentile(large[name], 0.99) / percentile(small[name], 0.99)
        target = "information only" if name == "GetPreferredAllocation" else f"target <= {TARGET:g}"
        print(f"ratio large / small for {name}: p50 {p50:.2f}, p99 {p99:.2f} ({target})")
    return 0


def _measure(*, devices: int, replicas: int, calls: int) -> dict[str, list[float]]:
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        write_devices(directory / "devices.yaml", devices)
        with agent(directory, directory / "devices.yaml", replicas=replicas):
            state = kubelet.wait_for_resource(RESOURCE, allocatable=devices * replicas, timeout=30)
            ids = sorted(state.devices)
            with grpc.insecure_channel(f"unix://{directory / state.endpoint}") as channel:
                stub = dp_grpc.DevicePluginStub(channel)
                snapshots = [_first_snapshot(stub, len(ids)) for _ in range(max(calls // 5, 50))]
                return {
                    "ListAndWatch first snapshot": snapshots,
                    "Allocate": _allocations(stub, ids, calls),
                    "GetPreferredAllocation": _preferences(stub, ids, max(calls // 3, 50)),
                }


def _first_snapshot(stub: dp_grpc.DevicePluginStub, expected: int) -> float:
    def _open() -> None:
        stream = stub.ListAndWatch(dp_pb2.Empty())
        assert len(next(stream).devices) == expected
        stream.cancel()
    return timed(_open)


def _allocations(stub: dp_grpc.DevicePluginStub, ids: list[str], calls: int) -> list[float]:
    requests = [dp_pb2.AllocateRequest(container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=[i])])
                for i in ids[:64]]
    for request in requests:
        stub.Allocate(request)
    return [timed(stub.Allocate, requests[n % len(requests)]) for n in range(calls)]


def _preferences(stub: dp_grpc.DevicePluginStub, ids: list[str], calls: int) -> list[float]:
    request = dp_pb2.PreferredAllocationRequest(container_requests=[dp_pb2.ContainerPreferredAllocationRequest(
        available_deviceIDs=ids, allocation_size=4)])
    stub.GetPreferredAllocation(request)
    return [timed(stub.GetPreferredAllocation, request) for _ in range(calls)]


if __name__ == "__main__":
    raise SystemExit(main())

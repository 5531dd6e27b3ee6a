"""NodePrepareResources round trip vs the floor of an empty unary call on the same DRA socket.

The floor is NodeUnprepareResources with no claims (no work at all). Two prepare paths are measured,
interleaved with the floor so all see the same machine state:

* a new claim: read the ResourceClaim (a GET from the API stand-in, or with ``dra.watch_claims`` from
  the agent's watch cache), allocate(), write its CDI spec (renamed into place) and append it to the
  checkpoint journal;
* a claim already prepared (the kubelet's retry): answered from the checkpoint.

The agent runs twice: with the default ``dra.watch_claims: false`` (every new claim costs a GET) and with
the claim watch cache on. Target: NodePrepareResources p99 within 1.5x of the floor's p99.

    python bench/dra_prepare.py [--calls 1000]
"""

from __future__ import annotations

import uuid

import grpc
from _common import Targets, describe, option, percentile, timed, workdir, write_devices
from dra_common import DRIVER, NODE, DraNode, dra_agent

from krakenplug.api import dra_v1_pb2 as dra_pb2
from krakenplug.api import dra_v1_pb2_grpc as dra_grpc

TARGET = 1.5


def _claim(node: DraNode, index: int) -> dra_pb2.Claim:
    uid, name = str(uuid.uuid4()), f"bench-{index}"
    node.api.put_claim({
        "metadata": {"namespace": "bench", "name": name, "uid": uid},
        "status": {"reservedFor": [{"resource": "pods", "name": name, "uid": str(uuid.uuid4())}],
                   "allocation": {"devices": {"results": [
                       {"request": "req", "driver": DRIVER, "pool": NODE, "device": f"fake-{index % 8}"}]}}}})
    return dra_pb2.Claim(namespace="bench", uid=uid, name=name)


def main() -> int:
    calls = option(__doc__, "calls", 1000)
    targets = Targets()
    for watch in (False, True):
        with workdir() as directory:
            write_devices(directory / "devices.yaml", 8)
            with dra_agent(directory, directory / "devices.yaml", watch_claims=watch) as node:
                with grpc.insecure_channel(f"unix://{node.endpoint}") as channel:
                    floor, fresh, again = _measure(node, dra_grpc.DRAPluginStub(channel), calls)
        read = "claim from the watch cache" if watch else "API GET"
        print(f"-- dra.watch_claims={str(watch).lower()}")
        print(describe("floor (NodeUnprepareResources, no claims)", floor))
        print(describe(f"NodePrepareResources, new claim ({read} + CDI spec + checkpoint)", fresh))
        print(describe("NodePrepareResources, prepared claim (checkpoint)", again))
        for name, samples in (("new claim", fresh), ("prepared claim", again)):
            ratio = percentile(samples, 0.99) / percentile(floor, 0.99)
            targets.check(f"NodePrepareResources {name} p99 / floor p99 (dra.watch_claims={str(watch).lower()})",
                          ratio, TARGET, ratio=ratio)
    return targets.exit_code()


def _measure(node: DraNode, stub: dra_grpc.DRAPluginStub, calls: int) -> tuple[list[float], ...]:
    empty = dra_pb2.NodeUnprepareResourcesRequest()
    claims = [_claim(node, i) for i in range(calls + 100)]
    for claim in claims[:100]:  # warm-up: connections, code paths
        stub.NodeUnprepareResources(empty)
        stub.NodePrepareResources(dra_pb2.NodePrepareResourcesRequest(claims=[claim]))
        stub.NodeUnprepareResources(dra_pb2.NodeUnprepareResourcesRequest(claims=[claim]))
    floor, fresh, again = [], [], []
    for claim in claims[100:]:
        request = dra_pb2.NodePrepareResourcesRequest(claims=[claim])
        floor.append(timed(stub.NodeUnprepareResources, empty))
        fresh.append(timed(stub.NodePrepareResources, request))
        again.append(timed(stub.NodePrepareResources, request))
        answer = stub.NodeUnprepareResources(dra_pb2.NodeUnprepareResourcesRequest(claims=[claim]))
        if answer.claims[claim.uid].error:
            raise SystemExit(f"unprepare failed: {answer.claims[claim.uid].error}")
    return floor, fresh, again


if __name__ == "__main__":
    raise SystemExit(main())

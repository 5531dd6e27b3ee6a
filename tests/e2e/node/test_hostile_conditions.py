"""The agent's device plugin under hostile or unlucky conditions, as a real ``krakenplug run`` process.

Surplus ListAndWatch streams, kubelet restarts beyond the crash-loop limit, a second agent or a foreign
listener on our socket path, and devices-file writes that are broken, half done or huge.
"""

from __future__ import annotations

import os
import socket
import time

import grpc
import pytest
import yaml

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.testing.polling import poll_until

pytestmark = pytest.mark.e2e

RESOURCE = "krakenplug.pcl.ac.cn/fake"
SOCKET = "krakenplug-fake.sock"
WAIT = 30.0
# A hub poll far longer than every wait below: a change seen in time was seen through an event.
NO_RESCAN = {"plugin": {"rescan_interval_seconds": 600}}


def _wait_until(condition, *, timeout: float = WAIT, what: str = "condition") -> None:
    poll_until(condition, timeout=timeout, interval=0.05, what=what)


def _identity(path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_ino, status.st_ctime_ns


def test_surplus_list_and_watch_streams_are_refused_and_unary_calls_still_served(kubelet, start_agent, node):
    start_agent()
    state = kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    with grpc.insecure_channel(f"unix://{node.plugin_dir / state.endpoint}") as channel:
        stub = dp_grpc.DevicePluginStub(channel)
        # Opened and never read; the deadline only keeps a test of broken code from hanging.
        streams = [stub.ListAndWatch(dp_pb2.Empty(), timeout=20) for _ in range(20)]
        try:
            request = dp_pb2.AllocateRequest(container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=["fake-1"])])
            assert stub.Allocate(request, timeout=5).container_responses
            assert stub.GetDevicePluginOptions(dp_pb2.Empty(), timeout=5).get_preferred_allocation_available
            preferred = stub.GetPreferredAllocation(dp_pb2.PreferredAllocationRequest(container_requests=[
                dp_pb2.ContainerPreferredAllocationRequest(available_deviceIDs=["fake-0", "fake-1"],
                                                           allocation_size=1)]), timeout=5)
            assert len(preferred.container_responses[0].deviceIDs) == 1
            refused = []
            for stream in streams:
                try:
                    next(stream)
                except grpc.RpcError as err:
                    refused.append(err)
            assert refused, "every surplus stream was accepted"
            assert {err.code() for err in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert "ListAndWatch streams" in refused[0].details()
        finally:
            for stream in streams:
                stream.cancel()
    assert kubelet.resources()[RESOURCE].connected  # the kubelet's own stream was never touched
    assert kubelet.allocate(RESOURCE, 1, pod="after-the-flood").container_responses


def test_a_hung_allocate_stalls_only_itself_health_and_other_calls_go_on(kubelet, start_agent, node):
    """Unary handlers run on the server's workers, streams on the gRPC event loop: a vendor call that
    hangs in Allocate must not hold up ListAndWatch or the kubelet's other calls (krakenplug.grpc_unix)."""
    agent = start_agent(config=NO_RESCAN)
    state = kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    data = node.devices.load()
    data["faults"] = {"allocate_delay_seconds": 3 * WAIT}  # longer than every wait below
    node.devices.write(data)
    with grpc.insecure_channel(f"unix://{node.plugin_dir / state.endpoint}") as channel:
        stub = dp_grpc.DevicePluginStub(channel)
        request = dp_pb2.AllocateRequest(container_requests=[dp_pb2.ContainerAllocateRequest(devices_ids=["fake-1"])])
        hung = stub.Allocate.future(request)
        try:
            node.devices.set_health("fake-0", "Unhealthy")
            kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=3, timeout=WAIT)
            assert stub.GetDevicePluginOptions(dp_pb2.Empty(), timeout=WAIT).get_preferred_allocation_available
            preferred = stub.GetPreferredAllocation(dp_pb2.PreferredAllocationRequest(container_requests=[
                dp_pb2.ContainerPreferredAllocationRequest(available_deviceIDs=["fake-1", "fake-2"],
                                                           allocation_size=1)]), timeout=WAIT)
            assert len(preferred.container_responses[0].deviceIDs) == 1
            assert not hung.done()  # all of the above happened while Allocate was still stuck
        finally:
            hung.cancel()
    # Stopping does not wait for the stuck call: the agent exits on SIGTERM (well before the stuck call's
    # 90 s) and says why.
    assert agent.terminate(timeout=WAIT) == 0
    assert "still running" in agent.log()


def test_kubelet_restarts_never_count_towards_the_crash_loop_guard(kubelet, start_agent):
    agent = start_agent(config={"plugin": {"restart_limit": 1}})
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)

    for restart in range(1, 5):
        kubelet.restart()
        kubelet.wait_for(lambda r, n=restart: len(kubelet.registrations) > n and r[RESOURCE].connected
                         and r[RESOURCE].allocatable == 4, timeout=WAIT, what=f"registered after restart {restart}")

    assert agent.running, agent.log()
    assert "Traceback" not in agent.log()


def test_a_second_agent_leaves_the_live_socket_alone_and_exits_with_one_line(kubelet, start_agent, node):
    first = start_agent()
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    ours = node.plugin_dir / SOCKET
    before = _identity(ours)

    second = start_agent()

    assert second.process.wait(timeout=WAIT) != 0
    log = second.log()
    assert f"another plugin serves {RESOURCE} at {ours}" in log
    assert "Traceback" not in log
    assert first.running and _identity(ours) == before
    assert len(kubelet.registrations) == 1 and kubelet.resources()[RESOURCE].connected
    assert kubelet.allocate(RESOURCE, 1, pod="still-served").container_responses


def test_a_foreign_listener_on_our_socket_path_is_never_stolen(kubelet, start_agent, node):
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(str(node.plugin_dir / SOCKET))
    squatter.listen(8)
    try:
        agent = start_agent()
        assert agent.process.wait(timeout=WAIT) != 0
        assert f"another process listens on {node.plugin_dir / SOCKET}" in agent.log()
        assert "Traceback" not in agent.log()
        assert (node.plugin_dir / SOCKET).exists()
        assert kubelet.registrations == []
    finally:
        squatter.close()


def test_a_stale_socket_left_by_a_killed_agent_is_replaced(kubelet, start_agent, node):
    first = start_agent()
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    first.kill()  # its socket file stays behind, with nobody listening

    start_agent()

    kubelet.wait_for(lambda r: len(kubelet.registrations) == 2 and r[RESOURCE].connected, timeout=WAIT)


def test_a_non_utf8_write_is_refused_and_later_edits_still_arrive_by_event(kubelet, start_agent, node):
    agent = start_agent(config=NO_RESCAN)
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    good = node.devices.load()

    temporary = node.devices.path.with_suffix(".tmp")
    temporary.write_bytes(b"devices:\n  - id: \xff\xfe\x00broken\n")
    os.replace(temporary, node.devices.path)
    _wait_until(lambda: "not UTF-8" in agent.log(), what="the encoding error in the log")
    assert kubelet.resources()[RESOURCE].capacity == 4

    node.devices.write(good)
    node.devices.set_health("fake-2", "Unhealthy")
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=3, timeout=5)
    assert "Traceback" not in agent.log() and agent.running


def test_a_non_atomic_rewrite_of_an_unchanged_file_does_not_change_what_the_kubelet_sees(kubelet, start_agent,
                                                                                         node):
    start_agent(config=NO_RESCAN)
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    text = node.devices.path.read_text()
    cut = text.index("  - id: fake-2")  # the first half is a valid file with two devices
    updates = kubelet.resources()[RESOURCE].updates

    with open(node.devices.path, "w") as file:  # rewritten in place, as `cat > file` or a naive editor does
        file.write(text[:cut])
        file.flush()
        time.sleep(0.3)
        file.write(text[cut:])
    time.sleep(1.0)

    state = kubelet.resources()[RESOURCE]
    assert (state.capacity, state.updates) == (4, updates)
    node.devices.set_health("fake-0", "Unhealthy")  # and the watcher is still there
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=3, timeout=5)


def test_an_oversized_devices_file_is_refused_and_a_kubelet_restart_gets_the_last_good_devices(kubelet, start_agent,
                                                                                               node):
    # The size is checked before parsing (a stat, not a 10 MB YAML load); how fast re-registration is
    # stays a benchmark's business (bench/restart_reregistration.py), not a timed assertion here.
    agent = start_agent(config=NO_RESCAN)
    kubelet.wait_for_resource(RESOURCE, capacity=4, allocatable=4, timeout=WAIT)
    data = node.devices.load()
    data["devices"] += [{"id": f"extra-{i}", "model": "KrakenSim-80G", "memory_mb": 1, "health_reason": "x" * 200}
                        for i in range(40_000)]  # about 10 MB
    temporary = node.devices.path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(data))
    os.replace(temporary, node.devices.path)

    kubelet.restart()
    kubelet.wait_for(lambda r: len(kubelet.registrations) == 2 and r[RESOURCE].connected
                     and r[RESOURCE].capacity == 4, timeout=WAIT)
    _wait_until(lambda: "max_file_bytes" in agent.log(), what="the size error in the log")

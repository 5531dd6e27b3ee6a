"""A tiny scriptable device plugin used to test the kubelet simulator through real gRPC.

It plays the plugin side only: serve a socket, register, stream device lists, answer allocation calls.
Every method can be made to fail with a chosen gRPC status.
"""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path

import grpc

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc

RESOURCE = "example.com/gpu"


def device(device_id: str, health: str = "Healthy", numa: tuple[int, ...] = ()) -> dp_pb2.Device:
    return dp_pb2.Device(ID=device_id, health=health,
                         topology=dp_pb2.TopologyInfo(nodes=[dp_pb2.NUMANode(ID=n) for n in numa]) if numa else None)


class StubPlugin(dp_grpc.DevicePluginServicer):
    def __init__(self, socket_path: Path, devices: list[dp_pb2.Device], *, preferred: bool = False,
                 pre_start: bool = False) -> None:
        self.socket_path = socket_path
        self.options = dp_pb2.DevicePluginOptions(get_preferred_allocation_available=preferred,
                                                  pre_start_required=pre_start)
        self.failures: dict[str, tuple[grpc.StatusCode, str]] = {}
        self.preferred_answer: list[str] | None = None
        self.calls: list[tuple[str, object]] = []
        self.fail_stream_after_first = False
        self._devices = list(devices)
        self._version = 0
        self._cond = threading.Condition()
        self._closed = False
        self._server: grpc.Server | None = None

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> StubPlugin:
        self._executor = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="stub-plugin")
        self._server = grpc.server(self._executor)
        dp_grpc.add_DevicePluginServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{self.socket_path}")
        self._server.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._executor.shutdown(wait=True)

    def update(self, devices: list[dp_pb2.Device]) -> None:
        with self._cond:
            self._devices = list(devices)
            self._version += 1
            self._cond.notify_all()

    def register(self, kubelet_socket: Path, resource: str, *, endpoint: str | None = None,
                 version: str = "v1beta1", timeout: float | None = 30) -> None:
        """``timeout=None`` sends Register without a deadline, as NVIDIA's and the kubelet's sample plugins do."""
        with grpc.insecure_channel(f"unix://{kubelet_socket}") as channel:
            dp_grpc.RegistrationStub(channel).Register(dp_pb2.RegisterRequest(
                version=version, endpoint=endpoint if endpoint is not None else self.socket_path.name,
                resource_name=resource, options=self.options), timeout=timeout)

    def called(self, method: str) -> list[object]:
        return [request for name, request in self.calls if name == method]

    # -- DevicePlugin service --------------------------------------------------------------------

    def GetDevicePluginOptions(self, request, context):
        self._enter("GetDevicePluginOptions", request, context)
        return self.options

    def ListAndWatch(self, request, context):
        self._enter("ListAndWatch", request, context)
        with self._cond:
            version, devices = self._version, list(self._devices)
        yield dp_pb2.ListAndWatchResponse(devices=devices)
        if self.fail_stream_after_first:
            context.abort(grpc.StatusCode.INTERNAL, "health watcher crashed")
        while context.is_active():
            with self._cond:
                self._cond.wait_for(lambda: self._version != version or self._closed, timeout=0.2)
                if self._closed:
                    return
                if self._version == version:
                    continue
                version, devices = self._version, list(self._devices)
            yield dp_pb2.ListAndWatchResponse(devices=devices)

    def GetPreferredAllocation(self, request, context):
        self._enter("GetPreferredAllocation", request, context)
        wanted = request.container_requests[0]
        answer = self.preferred_answer
        if answer is None:  # default: the last IDs offered, to differ from the kubelet's own order
            answer = list(wanted.available_deviceIDs)[-wanted.allocation_size:]
        return dp_pb2.PreferredAllocationResponse(container_responses=[
            dp_pb2.ContainerPreferredAllocationResponse(deviceIDs=answer)])

    def Allocate(self, request, context):
        self._enter("Allocate", request, context)
        return dp_pb2.AllocateResponse(container_responses=[dp_pb2.ContainerAllocateResponse(
            envs={"STUB_DEVICES": ",".join(req.devices_ids)}) for req in request.container_requests])

    def PreStartContainer(self, request, context):
        self._enter("PreStartContainer", request, context)
        return dp_pb2.PreStartContainerResponse()

    def _enter(self, method: str, request, context) -> None:
        self.calls.append((method, request))
        if method in self.failures:
            code, message = self.failures[method]
            context.abort(code, message)

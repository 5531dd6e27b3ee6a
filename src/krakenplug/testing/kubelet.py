"""A kubelet stand-in for device plugins: real gRPC on unix sockets, the kubelet's rules, no cluster.

It serves ``v1beta1.Registration`` on ``<dir>/kubelet.sock`` and behaves like the kubelet's device
manager: it validates a Register, dials the plugin back, stores the options it gets from
GetDevicePluginOptions, follows ListAndWatch (each message replaces the device set; when the stream
ends every device turns unhealthy and the stream is never reopened without a new Register), and
admits pods through GetPreferredAllocation, Allocate and PreStartContainer. Optionally it serves the
PodResources API from its allocations, which survive ``restart()`` as they survive a kubelet restart.

Typical use in a test::

    kubelet = KubeletSimulator(tmp, pod_resources_socket=tmp / "pod-resources.sock")
    kubelet.start()
    ...  # start the plugin with --device-plugin-dir tmp
    kubelet.wait_for(lambda r: r["example.com/gpu"].allocatable == 4)
    response = kubelet.allocate("example.com/gpu", 1, pod="trainer-0")
    kubelet.stop()
"""

from __future__ import annotations

import logging
import stat
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc

from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.testing import allocation, checkpoint, names
from krakenplug.testing.endpoint import DIAL_TIMEOUT_SECONDS, PluginEndpoint, endpoint_socket
from krakenplug.testing.errors import AdmissionError, PluginCallError, go_code_name
from krakenplug.testing.podresources import DEFAULT_RATE_LIMIT, PodResourcesServer
from krakenplug.testing.state import Allocation, DeviceView, ResourceState, describe_all

logger = logging.getLogger(__name__)

KUBELET_SOCKET = "kubelet.sock"
ENDPOINT_GRACE_SECONDS = 300.0  # a disconnected resource keeps its capacity this long
_NO_DEADLINE_SECONDS = 1e9  # a remaining time beyond ~30 years means the caller set no deadline

Predicate = Callable[[dict[str, ResourceState]], bool]


class KubeletSimulator:
    """See the module docstring. Thread-safe; ``registrations`` and ``calls`` are append-only histories."""

    def __init__(self, directory: Path | str, *, pod_resources_socket: Path | str | None = None,
                 call_preferred_allocation: bool = True,
                 pod_resources_rate_limit: tuple[float, int] | None = DEFAULT_RATE_LIMIT,
                 call_timeout: float | None = 30.0,
                 dial_timeout: float = DIAL_TIMEOUT_SECONDS,
                 endpoint_grace_seconds: float = ENDPOINT_GRACE_SECONDS) -> None:
        """``call_timeout`` bounds GetPreferredAllocation and Allocate. The kubelet has no such bound;
        here a hung plugin fails the test instead of hanging it. None waits forever like the kubelet.
        ``dial_timeout`` and ``endpoint_grace_seconds`` default to the kubelet's 10 s and 5 minutes."""
        self.directory = Path(directory)
        self.socket_path = self.directory / KUBELET_SOCKET
        self.pod_resources_socket = Path(pod_resources_socket) if pod_resources_socket else None
        self.registrations: list[dp_pb2.RegisterRequest] = []
        self.calls: list[str] = []
        self._call_preferred = call_preferred_allocation
        self._rate_limit = pod_resources_rate_limit
        self._call_timeout = call_timeout
        self._grace = endpoint_grace_seconds
        self._dial_timeout = dial_timeout
        self._cond = threading.Condition()
        self._admission = threading.Lock()  # pods are admitted one at a time, as by the kubelet
        self._resources: dict[str, ResourceState] = {}
        self._endpoints: dict[str, PluginEndpoint] = {}
        self._stopped_at: dict[str, float] = {}
        self._allocations: list[Allocation] = []
        self._pod_uids: dict[tuple[str, str], str] = {}
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._pod_resources: PodResourcesServer | None = None
        self._generation = 0  # bumped on stop: work begun by an older kubelet "process" is dropped

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start-up as in the kubelet: clean the sockets out of the directory, then serve."""
        with self._cond:
            if self._server is not None:
                raise RuntimeError("kubelet simulator is already running")
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            remove_sockets(self.directory)
            now = time.monotonic()
            for name, state in self._resources.items():
                # Restored from the checkpoint: an empty device set and a stopped endpoint until the
                # plugin registers again.
                state.devices, state.connected, state.updates = {}, False, 0
                self._stopped_at[name] = now
            self._executor = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="kubelet")
            server = grpc.server(self._executor)
            dp_grpc.add_RegistrationServicer_to_server(_Registration(self), server)
            server.add_insecure_port(f"unix://{self.socket_path}")
            if self.pod_resources_socket is not None:
                self._pod_resources = PodResourcesServer(
                    self.pod_resources_socket, allocations=self.allocations, devices=self._device_views,
                    rate_limit=self._rate_limit)
                self._pod_resources.start()
            server.start()
            self._server = server
        logger.info("kubelet simulator serving on %s", self.socket_path)

    def stop(self) -> None:
        """Stops serving; every plugin's ListAndWatch stream ends. Allocations are kept."""
        with self._cond:
            server, self._server = self._server, None
            executor, self._executor = self._executor, None
            pod_resources, self._pod_resources = self._pod_resources, None
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
            self._generation += 1
            for state in self._resources.values():
                state.connected = False
            self._cond.notify_all()
        if server is not None:
            server.stop(grace=None).wait()
        if executor is not None:
            executor.shutdown(wait=False)  # a Register still dialing finishes on its own, then its thread ends
        if pod_resources is not None:
            pod_resources.stop()
        for endpoint in endpoints:
            endpoint.close()

    def restart(self) -> None:
        """Like a kubelet restart: plugin sockets vanish and kubelet.sock is created anew."""
        self.stop()
        self.start()

    def __enter__(self) -> KubeletSimulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- observing -------------------------------------------------------------------------------

    def resources(self) -> dict[str, ResourceState]:
        """A snapshot of every resource ever registered (copies; safe to keep)."""
        with self._cond:
            return self._snapshot_locked()

    def allocations(self) -> list[Allocation]:
        with self._cond:
            return list(self._allocations)

    def wait_for(self, predicate: Predicate, *, timeout: float = 10.0, what: str = "") -> dict[str, ResourceState]:
        """Waits until ``predicate(resources())`` is true and returns that snapshot.

        A KeyError inside the predicate (a resource not registered yet) counts as "not yet".
        On timeout raises TimeoutError describing the current state.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snapshot = self._snapshot_locked()
                try:
                    if predicate(snapshot):
                        return snapshot
                except KeyError:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._timeout_message(what or _describe(predicate), timeout, snapshot))
                # Also wake periodically: the grace period expires without any event.
                self._cond.wait(min(remaining, 0.2))

    def wait_for_resource(self, resource: str, *, capacity: int | None = None, allocatable: int | None = None,
                          timeout: float = 10.0) -> ResourceState:
        """Waits until ``resource`` is connected with the given counts (None: any)."""
        def matches(resources: dict[str, ResourceState]) -> bool:
            state = resources[resource]
            return (state.connected and capacity in (None, state.capacity)
                    and allocatable in (None, state.allocatable))

        what = f"{resource} connected with capacity={capacity} allocatable={allocatable}"
        return self.wait_for(matches, timeout=timeout, what=what)[resource]

    # -- pod admission ---------------------------------------------------------------------------

    def allocate(self, resource: str, count: int | None = None, *, pod: str, namespace: str = "default",
                 container: str = "main", ids: list[str] | None = None) -> dp_pb2.AllocateResponse:
        """Admits one container asking for ``count`` devices (default 1) of ``resource``.

        ``ids`` skips the kubelet's choice and sends exactly those IDs to Allocate, to test how a plugin
        treats IDs the kubelet would never send. A container that already holds devices of the resource
        gets its saved response again without any RPC (a container restart). Raises AdmissionError.
        """
        if ids is not None and count is not None and count != len(ids):
            raise ValueError(f"count={count} does not match ids={ids!r}")
        count = len(ids) if ids is not None else (1 if count is None else count)
        with self._admission:
            held = self._find(resource, pod, namespace, container)
            if held is not None:
                return dp_pb2.AllocateResponse(container_responses=[held.container_response()])
            endpoint, state = self._admission_target(resource)
            chosen = list(ids) if ids is not None else self._choose(endpoint, state, count)
            response = self._call_allocate(endpoint, chosen)
            self._record_allocation(resource, pod, namespace, container, chosen, state, response)
            return response

    def release(self, pod: str, namespace: str = "default") -> None:
        """The pod is gone: its devices are free again and PodResources forgets it."""
        with self._cond:
            kept = [a for a in self._allocations if (a.pod, a.namespace) != (pod, namespace)]
            if len(kept) == len(self._allocations):
                raise KeyError(f"pod {pod} in namespace {namespace} holds no devices")
            self._allocations = kept
            self._pod_uids.pop((namespace, pod), None)
            self._write_checkpoint_locked()

    # -- registration (called by the gRPC server thread) -----------------------------------------

    def _register(self, request: dp_pb2.RegisterRequest, context: grpc.ServicerContext) -> dp_pb2.Empty:
        with self._cond:
            generation = self._generation
            self.registrations.append(_copy(request))
            self.calls.append("Register")
            self._cond.notify_all()  # wait_for on registrations sees it when it arrives
        problem = names.register_problem(request.version, request.resource_name)
        if problem:
            logger.warning("register refused: %s", problem)
            context.abort(grpc.StatusCode.UNKNOWN, problem)
        endpoint = PluginEndpoint(request.resource_name, request.endpoint,
                                  endpoint_socket(self.directory, request.endpoint),
                                  record=self._record, call_timeout=self._call_timeout)
        try:
            endpoint.dial(timeout=self._dial_timeout)
            options = endpoint.get_options(timeout=_finite(context.time_remaining()))
        except PluginCallError as err:
            endpoint.close()
            message = err.details if err.method == "Dial" else f"failed to get device plugin options: {err}"
            context.abort(grpc.StatusCode.UNKNOWN, message)
        installed, previous = self._install(endpoint, options, generation)
        if not installed:
            endpoint.close()
            context.abort(grpc.StatusCode.UNAVAILABLE, "kubelet is shutting down")
        if previous is not None:
            previous.close()  # its stream ends; the new endpoint takes over the resource
        endpoint.watch(self._on_devices, self._on_stream_end)
        logger.info("registered %s at %s", request.resource_name, request.endpoint)
        return dp_pb2.Empty()

    def _install(self, endpoint: PluginEndpoint, options: dp_pb2.DevicePluginOptions,
                 generation: int) -> tuple[bool, PluginEndpoint | None]:
        """Stores the endpoint unless the kubelet restarted meanwhile; returns (stored, replaced endpoint)."""
        with self._cond:
            if generation != self._generation:
                return False, None
            previous = self._endpoints.get(endpoint.resource)
            self._endpoints[endpoint.resource] = endpoint
            self._stopped_at.pop(endpoint.resource, None)
            state = self._resources.setdefault(
                endpoint.resource, ResourceState(endpoint.resource, endpoint.endpoint, options))
            state.endpoint, state.options, state.connected = endpoint.endpoint, options, True
            self._cond.notify_all()
            return True, previous

    def _on_devices(self, endpoint: PluginEndpoint, devices: dict[str, DeviceView]) -> None:
        with self._cond:
            if self._endpoints.get(endpoint.resource) is not endpoint:
                return
            state = self._resources[endpoint.resource]
            state.devices = devices
            state.updates += 1
            self._write_checkpoint_locked()
            self._cond.notify_all()

    def _on_stream_end(self, endpoint: PluginEndpoint, reason: str) -> None:
        with self._cond:
            if self._endpoints.get(endpoint.resource) is not endpoint:
                return  # replaced by a newer registration or dropped by stop()
            state = self._resources[endpoint.resource]
            state.devices = {device_id: DeviceView("Unhealthy", view.numa_nodes)
                             for device_id, view in state.devices.items()}
            state.connected = False
            self._stopped_at[endpoint.resource] = time.monotonic()
            self._cond.notify_all()

    def _record(self, call: str) -> None:
        with self._cond:
            self.calls.append(call)

    # -- internals -------------------------------------------------------------------------------

    def _admission_target(self, resource: str) -> tuple[PluginEndpoint, ResourceState]:
        with self._cond:
            state = self._snapshot_locked().get(resource)
            endpoint = self._endpoints.get(resource)
            if state is None or endpoint is None:
                raise AdmissionError(f"cannot allocate unregistered device {resource}")
            return endpoint, state

    def _choose(self, endpoint: PluginEndpoint, state: ResourceState, count: int) -> list[str]:
        taken = {device_id for a in self.allocations() if a.resource == state.resource_name
                 for device_id in a.device_ids}
        use_preferred = self._call_preferred and state.options.get_preferred_allocation_available
        try:
            return allocation.choose(state, count, taken,
                                     preferred=endpoint.preferred_allocation if use_preferred else None)
        except PluginCallError as err:
            raise AdmissionError(_unexpected(err), cause=err) from err

    def _call_allocate(self, endpoint: PluginEndpoint, device_ids: list[str]) -> dp_pb2.AllocateResponse:
        with self._cond:
            stopped = endpoint.resource in self._stopped_at
        if stopped:
            raise AdmissionError(f"endpoint for {endpoint.resource} has been stopped")
        try:
            response = endpoint.allocate(device_ids)
            if not response.container_responses:
                raise AdmissionError("no containers return in allocation response")
            if self._resources[endpoint.resource].options.pre_start_required:
                endpoint.pre_start(device_ids)
        except PluginCallError as err:
            raise AdmissionError(_unexpected(err), cause=err) from err
        return response

    def _record_allocation(self, resource: str, pod: str, namespace: str, container: str, chosen: list[str],
                           state: ResourceState, response: dp_pb2.AllocateResponse) -> None:
        with self._cond:
            uid = self._pod_uids.setdefault((namespace, pod), str(uuid.uuid4()))
            numa = tuple((device_id, state.devices[device_id].numa_nodes if device_id in state.devices else ())
                         for device_id in chosen)
            self._allocations.append(Allocation(
                pod=pod, namespace=namespace, container=container, resource=resource, pod_uid=uid,
                device_numa=numa, response=response.container_responses[0].SerializeToString()))
            self._write_checkpoint_locked()
            self._cond.notify_all()

    def _find(self, resource: str, pod: str, namespace: str, container: str) -> Allocation | None:
        key = (resource, pod, namespace, container)
        return next((a for a in self.allocations() if (a.resource, a.pod, a.namespace, a.container) == key), None)

    def _snapshot_locked(self) -> dict[str, ResourceState]:
        now = time.monotonic()
        for resource, stopped_at in list(self._stopped_at.items()):
            if now - stopped_at >= self._grace:
                # Past the grace period the kubelet reports the resource with capacity 0.
                self._resources[resource].devices = {}
        return {name: state.copy() for name, state in self._resources.items()}

    def _device_views(self) -> dict[str, dict[str, DeviceView]]:
        return {name: state.devices for name, state in self.resources().items()}

    def _write_checkpoint_locked(self) -> None:
        text = checkpoint.render(self._allocations, {n: s.devices for n, s in self._resources.items()})
        try:
            checkpoint.write(self.directory, text)
        except OSError as err:  # the test may already be removing the directory
            logger.debug("checkpoint not written: %s", err)

    def _timeout_message(self, what: str, timeout: float, snapshot: dict[str, ResourceState]) -> str:
        with self._cond:
            calls = self.calls[-12:]
            registrations = len(self.registrations)
        return (f"kubelet simulator: {what} not reached within {timeout:g}s\n"
                f"resources now:\n{describe_all(snapshot)}\n"
                f"registrations so far: {registrations}; last calls: {calls}")


class _Registration(dp_grpc.RegistrationServicer):
    def __init__(self, simulator: KubeletSimulator) -> None:
        self._simulator = simulator

    def Register(self, request: dp_pb2.RegisterRequest, context: grpc.ServicerContext) -> dp_pb2.Empty:
        return self._simulator._register(request, context)


def remove_sockets(directory: Path) -> None:
    """Removes every unix socket in ``directory`` (not sub-directories, not other files)."""
    for entry in directory.iterdir():
        try:
            if stat.S_ISSOCK(entry.lstat().st_mode):
                entry.unlink()
        except FileNotFoundError:
            pass


def _finite(remaining: float | None) -> float | None:
    """The caller's remaining time as a gRPC timeout; None when it set no deadline.

    Without a deadline gRPC Python reports about 9.2e18 s, which as a timeout counts as already expired.
    """
    return remaining if remaining is not None and remaining < _NO_DEADLINE_SECONDS else None


def _describe(predicate: Predicate) -> str:
    name = getattr(predicate, "__name__", "")
    return "condition" if not name or name == "<lambda>" else name


def _copy(request: dp_pb2.RegisterRequest) -> dp_pb2.RegisterRequest:
    copied = dp_pb2.RegisterRequest()
    copied.CopyFrom(request)
    return copied


def _unexpected(err: PluginCallError) -> str:
    """The pod status message of a kubelet whose plugin call failed."""
    return (f"{err.method} failed due to rpc error: code = {go_code_name(err.code)} desc = {err.details}, "
            f"which is unexpected")

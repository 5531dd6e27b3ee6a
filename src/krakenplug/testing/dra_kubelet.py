"""A kubelet stand-in for DRA drivers: the plugin watcher, the DRA manager's calls and the health stream.

Like the kubelet it watches the registry directory (walking it at start, then noticing new and removed
sockets), calls ``GetInfo`` on each registration socket (again on the next poll while it does not answer, as
the kubelet's reconciler retries), checks type ``DRAPlugin``, the driver name,
the endpoint and that ``supported_versions`` names a service it speaks (``v1.DRAPlugin`` preferred over
``v1beta1.DRAPlugin``), answers ``NotifyRegistrationStatus``, and then opens ``NodeWatchResources`` on
the endpoint, re-opening it every ``health_retry_seconds`` (the kubelet: 5 s) while it fails. A driver
whose registration socket disappears is deregistered. ``prepare``/``unprepare`` are the kubelet's
NodePrepareResources/NodeUnprepareResources calls; ``restart()`` forgets everything, as a restarted
kubelet does, and walks the directory again.

Typical use::

    kubelet = DraKubelet(tmp / "plugins_registry")
    kubelet.start()
    ...  # start the driver
    kubelet.wait_for(lambda k: "fake.krakenplug.pcl.ac.cn" in k.drivers)
    answer = kubelet.prepare("fake.krakenplug.pcl.ac.cn", [("default", uid, "claim-0")])
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from krakenplug.api import dra_v1_pb2 as dra_pb2
from krakenplug.api import dra_v1_pb2_grpc as dra_grpc
from krakenplug.api import dra_v1beta1_pb2 as dra_beta_pb2
from krakenplug.api import dra_v1beta1_pb2_grpc as dra_beta_grpc
from krakenplug.api import drahealth_v1alpha1_pb2 as health_pb2
from krakenplug.api import drahealth_v1alpha1_pb2_grpc as health_grpc
from krakenplug.api import pluginregistration_v1_pb2 as reg_pb2
from krakenplug.api import pluginregistration_v1_pb2_grpc as reg_grpc
from krakenplug.testing.errors import PluginCallError

logger = logging.getLogger(__name__)

KNOWN_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
HEALTH_RETRY_SECONDS = 5.0
_POLL_SECONDS = 0.05
_CALL_TIMEOUT_SECONDS = 30.0

ClaimTuple = tuple[str, str, str]  # namespace, uid, name


@dataclasses.dataclass
class Driver:
    name: str
    endpoint: str
    version: str
    registration_socket: Path
    health: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)  # device -> (status, message)
    health_updates: int = 0


@dataclasses.dataclass(frozen=True)
class Registration:
    socket: Path
    info: reg_pb2.PluginInfo
    accepted: bool
    error: str


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which file is at ``path``: a socket deleted and bound again within one poll often gets the same
    inode number back, so the change time is part of it (the kubelet's fsnotify sees both events)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_ctime_ns)


class DraKubelet:
    """See the module docstring. ``registrations`` is an append-only history."""

    def __init__(self, registry_dir: Path | str, *, known_versions: Sequence[str] = KNOWN_VERSIONS,
                 health_retry_seconds: float = HEALTH_RETRY_SECONDS) -> None:
        self.registry_dir = Path(registry_dir)
        self.known_versions = tuple(known_versions)
        self.health_retry_seconds = health_retry_seconds
        self.registrations: list[Registration] = []
        self.drivers: dict[str, Driver] = {}
        self._seen: dict[Path, tuple[int, int, int]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._channels: list[grpc.Channel] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._spawn(self._watch, "dra-kubelet-watcher")

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            channels, self._channels = self._channels, []
        for channel in channels:
            channel.close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        with self._cond:
            self.drivers.clear()
            self._seen.clear()
            self._cond.notify_all()

    def restart(self) -> None:
        """A kubelet restart: every connection and registration is gone; the directory is walked again."""
        self.stop()
        self.start()

    def __enter__(self) -> DraKubelet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def wait_for(self, predicate: Callable[[DraKubelet], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(self)
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the DRA kubelet stand-in never reached the expected state")
                self._cond.wait(min(remaining, 0.1))

    # -- the plugin watcher ------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            present = {path: _identity(path) for path in self.registry_dir.glob("*.sock")}
            for path, identity in present.items():
                if identity is not None and self._seen.get(path) != identity and self._register(path):
                    self._seen[path] = identity  # a socket that did not answer is tried again, as by the reconciler
            for path in [p for p in self._seen if p not in present]:
                del self._seen[path]
                with self._cond:
                    for name in [n for n, d in self.drivers.items() if d.registration_socket == path]:
                        logger.info("registration socket %s removed: deregistering %s", path, name)
                        del self.drivers[name]
                    self._cond.notify_all()
            self._stop.wait(_POLL_SECONDS)

    def _register(self, path: Path) -> bool:
        channel = grpc.insecure_channel(f"unix://{path}")
        try:
            stub = reg_grpc.RegistrationStub(channel)
            try:
                info = stub.GetInfo(reg_pb2.InfoRequest(), timeout=5)
            except grpc.RpcError as err:
                logger.info("GetInfo on %s failed: %s", path, err.code())
                return False
            error = self._check(info)
            try:
                stub.NotifyRegistrationStatus(reg_pb2.RegistrationStatus(plugin_registered=not error, error=error),
                                              timeout=5)
            except grpc.RpcError as err:
                logger.info("NotifyRegistrationStatus on %s failed: %s", path, err)
        finally:
            channel.close()
        with self._cond:
            self.registrations.append(Registration(path, info, not error, error))
            if not error:
                version = next(v for v in self.known_versions if v in info.supported_versions)
                driver = Driver(info.name, info.endpoint, version, path)
                self.drivers[info.name] = driver
                self._spawn(self._health, f"dra-kubelet-health-{info.name}", driver)
            self._cond.notify_all()
        return True

    def _check(self, info: reg_pb2.PluginInfo) -> str:
        if info.type != "DRAPlugin":
            return f"plugin type {info.type!r} is not DRAPlugin"
        if not info.name:
            return "empty driver name"
        if not info.endpoint or not Path(info.endpoint).exists():
            return f"endpoint {info.endpoint!r} does not exist"
        if not any(version in self.known_versions for version in info.supported_versions):
            return f"none of the supported versions {list(info.supported_versions)} is known ({self.known_versions})"
        return ""

    # -- health ------------------------------------------------------------------------------------

    def _health(self, driver: Driver) -> None:
        while not self._stop.is_set():
            with self._cond:
                if self.drivers.get(driver.name) is not driver:
                    return
            channel = grpc.insecure_channel(f"unix://{driver.endpoint}")
            with self._cond:
                self._channels.append(channel)
            try:
                stream = health_grpc.DRAResourceHealthStub(channel).NodeWatchResources(
                    health_pb2.NodeWatchResourcesRequest())
                for response in stream:
                    with self._cond:
                        driver.health = {d.device.device_name: (d.health, d.message) for d in response.devices}
                        driver.health_updates += 1
                        self._cond.notify_all()
            except grpc.RpcError as err:
                logger.debug("health stream of %s ended: %s", driver.name, err)
            finally:
                channel.close()
            self._stop.wait(self.health_retry_seconds)

    def health(self, driver: str) -> dict[str, str]:
        """Device name -> "HEALTHY" | "UNHEALTHY" | "UNKNOWN" as last streamed."""
        with self._cond:
            found = self.drivers.get(driver)
            return {name: health_pb2.HealthStatus.Name(status) for name, (status, _) in (found.health if found else {}).items()}

    # -- NodePrepareResources / NodeUnprepareResources ---------------------------------------------

    def _stub(self, driver: str) -> tuple[Any, Any, grpc.Channel]:
        with self._cond:
            found = self.drivers.get(driver)
        if found is None:
            raise PluginCallError("NodePrepareResources", grpc.StatusCode.UNAVAILABLE,
                                  f"DRA driver {driver} is not registered")
        channel = grpc.insecure_channel(f"unix://{found.endpoint}")
        if found.version == "v1.DRAPlugin":
            return dra_grpc.DRAPluginStub(channel), dra_pb2, channel
        return dra_beta_grpc.DRAPluginStub(channel), dra_beta_pb2, channel

    def _claims_call(self, driver: str, method: str, claims: Sequence[ClaimTuple]) -> dict[str, Any]:
        """uid -> answer of ``method`` (NodePrepareResources or NodeUnprepareResources) for ``claims``, in the
        API version the driver registered."""
        stub, module, channel = self._stub(driver)
        with channel:
            request = getattr(module, f"{method}Request")(
                claims=[module.Claim(namespace=ns, uid=uid, name=name) for ns, uid, name in claims])
            try:
                return dict(getattr(stub, method)(request, timeout=_CALL_TIMEOUT_SECONDS).claims)
            except grpc.RpcError as err:
                raise PluginCallError.from_rpc_error(method, err) from err

    def prepare(self, driver: str, claims: Sequence[ClaimTuple]) -> dict[str, Any]:
        """uid -> NodePrepareResourceResponse; raises PluginCallError when the whole call fails.

        As the kubelet, it refuses an answer that leaves a claim out or names a device without its pool,
        name or a fully qualified CDI ID (``vendor/class=name``).
        """
        answers = self._claims_call(driver, "NodePrepareResources", claims)
        problem = _prepare_problem(claims, answers)
        if problem:
            raise PluginCallError("NodePrepareResources", grpc.StatusCode.INTERNAL, problem)
        return answers

    def unprepare(self, driver: str, claims: Sequence[ClaimTuple]) -> dict[str, Any]:
        """uid -> NodeUnprepareResourceResponse; every claim of the request must be answered."""
        answers = self._claims_call(driver, "NodeUnprepareResources", claims)
        missing = sorted({uid for _, uid, _ in claims} - set(answers))
        if missing:
            raise PluginCallError("NodeUnprepareResources", grpc.StatusCode.INTERNAL,
                                  f"the answer leaves out claims {missing}")
        return answers


def _prepare_problem(claims: Sequence[ClaimTuple], answers: dict[str, Any]) -> str:
    missing = sorted({uid for _, uid, _ in claims} - set(answers))
    if missing:
        return f"the answer leaves out claims {missing}"
    for uid, answer in answers.items():
        if answer.error:
            continue
        for device in answer.devices:
            if not device.pool_name or not device.device_name:
                return f"claim {uid}: a device without pool or name: {device}"
            for cdi_id in device.cdi_device_ids:
                kind, equals, name = cdi_id.partition("=")
                if not equals or "/" not in kind or not name:
                    return f"claim {uid}: {cdi_id!r} is not a fully qualified CDI device ID"
    return ""

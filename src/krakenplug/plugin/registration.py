"""Registering one served resource with the kubelet, retrying with backoff until it works or is cancelled.

Registration is synchronous on the kubelet's side (since 1.25): during Register it dials our socket and
calls GetDevicePluginOptions, so this runs on its own thread while the server's workers stay free, and
the Register call gets a generous deadline (the kubelet alone may spend 10 s dialling back).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from krakenplug import errors
from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.plugin import servicer, watcher
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
_REGISTER_TIMEOUT_SECONDS = 60.0
_FIRST_RETRY_SECONDS = 0.2
_MAX_RETRY_SECONDS = 10.0
# gRPC's default reconnect backoff starts at 1 s; a kubelet that is restarting is back much sooner.
_CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # never reuse a connection to a kubelet.sock that has since gone
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def register_request(resource: str, endpoint: str) -> dp_pb2.RegisterRequest:
    return dp_pb2.RegisterRequest(version=API_VERSION, endpoint=endpoint, resource_name=resource,
                                  options=servicer.OPTIONS)


def register_once(kubelet_socket: Path, request: dp_pb2.RegisterRequest, *,
                  on_channel: Callable[[grpc.Channel | None], None] = lambda channel: None) -> None:
    """One Register call; raises RegistrationError with the kubelet's answer when it fails."""
    with grpc.insecure_channel(f"unix://{kubelet_socket}", options=_CHANNEL_OPTIONS) as channel:
        on_channel(channel)
        # No channel_ready_future first: its polling thread costs milliseconds, and a call that cannot
        # connect fails fast (UNAVAILABLE) on its own, to be retried with backoff.
        try:
            dp_grpc.RegistrationStub(channel).Register(request, timeout=_REGISTER_TIMEOUT_SECONDS)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise errors.RegistrationError(f"kubelet socket {kubelet_socket} does not accept connections: "
                                               f"{err.details()}") from err
            raise errors.RegistrationError(f"kubelet refused the registration of {request.resource_name}: "
                                           f"{err.code().name}: {err.details()}") from err


class Registrar:
    """Registers one server generation in the background; ``registered_with`` identifies the kubelet.sock it reached.

    While ``kubelet.sock`` is missing it sleeps on ``pulse``, which the plugin's directory watch bumps
    when the socket appears (and at least every ``FALLBACK_POLL_SECONDS``); it bumps ``pulse`` itself
    once registered.
    """

    def __init__(self, device_plugin_dir: Path, resource: str, endpoint: str, pulse: watcher.Pulse) -> None:
        self.kubelet_socket = Path(device_plugin_dir) / KUBELET_SOCKET
        self.request = register_request(resource, endpoint)
        self.registered_with: tuple[int, int] | None = None
        self.dialled: tuple[int, int] | None = None  # the kubelet.sock of the last attempt, even one in flight
        self.registered = threading.Event()
        self._pulse = pulse
        self._failures = TransitionLog(logger)
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._thread = threading.Thread(target=self._run, name=f"register-{endpoint}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Stops retrying and interrupts a Register call in flight."""
        self._cancelled.set()
        self._pulse.bump()
        with self._lock:
            if self._channel is not None:
                self._channel.close()
        if self._thread.ident is not None:
            self._thread.join(timeout=_REGISTER_TIMEOUT_SECONDS)

    def _run(self) -> None:
        resource, retry, attempt, announced = self.request.resource_name, _FIRST_RETRY_SECONDS, 0, False
        while not self._cancelled.is_set():
            seen = self._pulse.count
            kubelet = watcher.identity_of(self.kubelet_socket)
            if kubelet is None:
                if not announced:
                    logger.info("waiting for %s to register %s", self.kubelet_socket, resource)
                    announced = True
                self._pulse.wait(seen, watcher.FALLBACK_POLL_SECONDS)
                continue
            attempt += 1
            self.dialled = kubelet
            try:
                register_once(self.kubelet_socket, self.request, on_channel=self._remember)
            except errors.RegistrationError as err:
                if self._cancelled.is_set():
                    return
                # The same failure again is only a debug line: a kubelet that refuses for hours must not fill the log.
                if not self._failures.report("register", str(err), logging.WARNING, "registering %s with the kubelet "
                                             "failed (attempt %d, retrying with backoff up to %g s): %s",
                                             resource, attempt, _MAX_RETRY_SECONDS, err):
                    logger.debug("registering %s failed again (attempt %d): %s", resource, attempt, err)
                self._cancelled.wait(retry)
                retry = min(retry * 2, _MAX_RETRY_SECONDS)
                continue
            finally:
                self._remember(None)
            self.registered_with = kubelet
            self.registered.set()
            self._pulse.bump()
            logger.info("registered %s with the kubelet (endpoint %s)", resource, self.request.endpoint)
            return

    def _remember(self, channel: grpc.Channel | None) -> None:
        with self._lock:
            self._channel = channel
            if channel is not None and self._cancelled.is_set():
                channel.close()

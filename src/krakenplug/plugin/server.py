"""One resource's gRPC server on its unix socket: bind, serve, publish snapshots, stop and clean up.

A server is never restarted in place: after the kubelet restarts, the manager stops it and starts a
fresh one on a fresh socket (from the same inventory), so every generation has its own socket file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from pathlib import Path

import grpc

from krakenplug import errors
from krakenplug.api import deviceplugin_v1beta1_pb2 as dp_pb2
from krakenplug.api import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from krakenplug.backends import base
from krakenplug.grpc_unix import UnixServer
from krakenplug.plugin import allocation, servicer, watcher
from krakenplug.plugin import feed as feed_mod
from krakenplug.plugin import inventory as inventory_mod

logger = logging.getLogger(__name__)

# The workers serve the unary calls (Allocate, GetPreferredAllocation, GetDevicePluginOptions); the
# ListAndWatch streams wait on the gRPC loop (krakenplug.grpc_unix). The kubelet keeps one stream and may
# briefly hold a second across a reconnect; the servicer refuses streams beyond MAX_STREAMS. Calls beyond
# MAX_CONCURRENT_RPCS in flight are refused at once (RESOURCE_EXHAUSTED) instead of queueing unbounded.
MAX_WORKERS = 16
MAX_STREAMS = 4
MAX_CONCURRENT_RPCS = 64
# Only the kubelet (root) connects; the socket's mode must not follow the umask (0777 under umask 000).
SOCKET_MODE = 0o600
_PROBE_TIMEOUT_SECONDS = 2.0


class SocketInUse(errors.RegistrationError):
    """A live process serves at our socket path: never take it over (two agents would unlink each other)."""


class ResourceServer:
    """Serves the DevicePlugin service for one resource on ``socket_path``."""

    def __init__(self, inventory: inventory_mod.Inventory, socket_path: Path, *, backend: base.Backend,
                 limits: allocation.Limits, cdi_prefix: str | None = None) -> None:
        self.socket_path = Path(socket_path)
        self.identity: tuple[int, int] | None = None
        self._feed = feed_mod.SnapshotFeed(inventory)
        self._servicer = servicer.DevicePluginServicer(self._feed, backend, limits=limits, cdi_prefix=cdi_prefix,
                                                       max_streams=MAX_STREAMS)
        self._grpc: UnixServer | None = None

    @property
    def resource(self) -> str:
        return self._feed.inventory.resource

    @property
    def inventory(self) -> inventory_mod.Inventory:
        return self._feed.inventory

    def publish(self, inventory: inventory_mod.Inventory) -> bool:
        """Makes ``inventory`` current; True when connected kubelets get a new snapshot."""
        return self._feed.publish(inventory)

    def start(self) -> None:
        """Binds the socket (replacing a stale file) and serves; raises RegistrationError when it cannot.

        Raises :class:`SocketInUse` when a live process answers at the path.
        """
        _claim_socket(self.socket_path, self.resource)
        self._grpc = UnixServer(max_workers=MAX_WORKERS, thread_name_prefix=f"plugin-{self.socket_path.stem}",
                                  maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
        dp_grpc.add_DevicePluginServicer_to_server(self._servicer, self._grpc.server)
        try:
            self._grpc.bind(self.socket_path)
            os.chmod(self.socket_path, SOCKET_MODE)  # bound now; nobody can connect before start()
            self._grpc.start()
            _check_accepts(self.socket_path)
        except (RuntimeError, OSError) as err:
            self.stop()
            raise errors.RegistrationError(f"cannot serve {self.resource} on {self.socket_path}: {err}") from err
        self.identity = watcher.identity_of(self.socket_path)
        logger.info("serving %s on %s", self.resource, self.socket_path)

    def stop(self) -> None:
        """Ends every stream, stops the server and removes our socket (not one somebody else created since)."""
        self._feed.close()
        if self._grpc is not None:
            self._grpc.stop()
            self._grpc = None
        if self.identity is not None and watcher.identity_of(self.socket_path) == self.identity:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self.identity = None

    def owns_socket(self) -> bool:
        """False once our socket file was deleted or replaced (the kubelet restarted and cleaned up)."""
        return self.identity is not None and watcher.identity_of(self.socket_path) == self.identity


def _claim_socket(path: Path, resource: str) -> None:
    """Clears ``path`` for our socket: a stale socket (nobody listens) goes, a live one is never touched."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise errors.RegistrationError(f"cannot serve on {path}: a directory is in the way")
    if stat.S_ISSOCK(mode):
        if _accepts(path):
            if _is_device_plugin(path):
                raise SocketInUse(f"another plugin serves {resource} at {path}; not replacing it")
            raise SocketInUse(f"another process listens on {path} (it is not a device plugin); not replacing it")
        logger.info("removing stale socket %s (nobody listens on it)", path)
    else:
        logger.warning("replacing %s, which is not a socket", path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_PROBE_TIMEOUT_SECONDS)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # it exists and is not refusing: treat it as somebody's, never steal it
    return True


def _is_device_plugin(path: Path) -> bool:
    with grpc.insecure_channel(f"unix://{path}") as channel:
        try:
            dp_grpc.DevicePluginStub(channel).GetDevicePluginOptions(dp_pb2.Empty(), timeout=_PROBE_TIMEOUT_SECONDS)
        except grpc.RpcError:
            return False
    return True


def _check_accepts(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5.0)
        probe.connect(str(path))

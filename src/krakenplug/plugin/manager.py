"""Device snapshots in, one served and registered gRPC endpoint per resource out (Intel's manager model).

The manager compares each new hub snapshot with the last one: a new resource gets a server and a
registration, a vanished resource's server is stopped, and a changed resource publishes a new
inventory to its ListAndWatch streams. It also restarts endpoints the kubelet has forgotten (its
restart deleted our socket or recreated kubelet.sock). Restarts the kubelet caused never count towards
the crash-loop guard; only a socket of ours removed while the same kubelet stays does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from krakenplug import errors
from krakenplug.backends import base
from krakenplug.hub import Snapshot
from krakenplug.plugin import allocation, naming, registration, watcher
from krakenplug.plugin import inventory as inventory_mod
from krakenplug.plugin import server as server_mod
from krakenplug.settings import PluginSettings
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Endpoint:
    server: server_mod.ResourceServer
    registrar: registration.Registrar
    # Set when this generation replaced one whose socket vanished while kubelet.sock stayed the same
    # file: if it registers with that same kubelet again, somebody other than the kubelet removed it.
    suspect: tuple[tuple[int, int], str] | None = None

    def stop(self) -> None:
        self.registrar.cancel()  # first: a Register in flight must not dial a server that is going away
        self.server.stop()


class Manager:
    """Not re-entrant: ``apply``, ``reconcile``, ``check_kubelet`` and ``close`` run on the plugin's thread;
    only :meth:`publish_fast` may run on another (the hub's), and it never waits for them."""

    def __init__(self, backend: base.Backend, config: PluginSettings, pulse: watcher.Pulse) -> None:
        self._lock = threading.Lock()
        self.applied_version = -1
        self._applied_ids: tuple[str, ...] = ()
        self._backend = backend
        self._config = config
        self._pulse = pulse
        self._directory = Path(config.device_plugin_dir)
        self._inventories: dict[str, inventory_mod.Inventory] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._socket_names: dict[str, str] = {}
        self._log = TransitionLog(logger)
        self._guard = watcher.RestartGuard(limit=config.restart_limit, window_seconds=config.restart_window_seconds)

    @property
    def endpoints(self) -> dict[str, server_mod.ResourceServer]:
        """The resources served right now and their servers."""
        return {resource: endpoint.server for resource, endpoint in self._endpoints.items()}

    @property
    def pending(self) -> bool:
        """True while a resource that should be served is not (its start failed; retried later)."""
        return any(resource not in self._endpoints for resource in self._inventories)

    def publish_fast(self, snapshot: Snapshot) -> bool:
        """Publishes ``snapshot`` at once when it changes no resource's existence (only health, NUMA, IDs).

        Returns False, doing nothing, when servers must start or stop or the manager is busy: then
        :meth:`apply` on the plugin's thread handles it.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if snapshot.version <= self.applied_version:
                return True  # the plugin's thread got there first
            if tuple(device.id for device in snapshot.devices) != self._applied_ids:
                return False
            wanted = self._inventories_of(snapshot.devices)
            if wanted.keys() != self._inventories.keys() or wanted.keys() != self._endpoints.keys():
                return False
            self._publish(wanted)
            self.applied_version = snapshot.version
            return True
        finally:
            self._lock.release()

    def apply(self, snapshot: Snapshot) -> None:
        """Brings servers and inventories in line with a new device snapshot (once per version).

        New resources get their servers from :meth:`reconcile`.
        """
        with self._lock:
            if snapshot.version <= self.applied_version:
                return
            self.applied_version = snapshot.version
            self._applied_ids = tuple(device.id for device in snapshot.devices)
            self._apply(self._inventories_of(snapshot.devices))

    def _apply(self, wanted: dict[str, inventory_mod.Inventory]) -> None:
        for resource in sorted(set(self._inventories) - set(wanted)):
            logger.info("resource %s has no devices any more; stopping its server", resource)
            endpoint = self._endpoints.pop(resource, None)
            if endpoint is not None:
                endpoint.stop()
        self._publish(wanted)

    def _publish(self, wanted: dict[str, inventory_mod.Inventory]) -> None:
        for resource, inventory in wanted.items():
            endpoint = self._endpoints.get(resource)
            if endpoint is not None:
                endpoint.server.publish(inventory)  # first: the kubelet hears of it before our log line is written
            previous = self._inventories.get(resource)
            if previous is None or previous.advertised != inventory.advertised:
                logger.info("%s: %s", resource, inventory.summary())
        self._inventories = wanted

    def reconcile(self) -> None:
        """Starts the servers that should run but do not (new resources, or a start that failed before).

        Raises :class:`server.SocketInUse` when another live process serves at one of our paths.
        """
        with self._lock:
            if not self._inventories or not self._directory_usable():
                return
            for resource, inventory in self._inventories.items():
                if resource not in self._endpoints:
                    self._start(resource, inventory)

    def check_kubelet(self) -> None:
        """Restarts every endpoint the kubelet has forgotten; raises RegistrationError in a crash loop."""
        with self._lock:
            self._check_kubelet()

    def _check_kubelet(self) -> None:
        self._judge_suspects()
        kubelet_now = watcher.identity_of(self._directory / registration.KUBELET_SOCKET)
        for resource, endpoint in list(self._endpoints.items()):
            reason = watcher.restart_reason(endpoint.server, endpoint.registrar)
            if reason is None:
                continue
            registered_with = endpoint.registrar.dialled
            if endpoint.suspect is not None and endpoint.suspect[0] == kubelet_now:
                # Removed again before it even registered, and still the same kubelet: not the kubelet.
                self._guard.record(f"{endpoint.suspect[1]} while the kubelet kept running")
            logger.info("restarting the %s server and registering again: %s", resource, reason)
            self._endpoints.pop(resource).stop()
            started = self._start(resource, self._inventories[resource])
            # The kubelet deletes sockets at its start, before it creates kubelet.sock anew; whether it
            # did this one is only known once we registered again (with a new kubelet.sock, or the old).
            if started is not None and registered_with is not None and registered_with == kubelet_now:
                started.suspect = (registered_with, reason)

    def close(self) -> None:
        """Stops every server and removes its socket."""
        with self._lock:
            while self._endpoints:
                _, endpoint = self._endpoints.popitem()
                endpoint.stop()

    def _judge_suspects(self) -> None:
        for endpoint in self._endpoints.values():
            if endpoint.suspect is None or endpoint.registrar.registered_with is None:
                continue
            kubelet_before, reason = endpoint.suspect
            endpoint.suspect = None
            if endpoint.registrar.registered_with == kubelet_before:
                self._guard.record(f"{reason} while the kubelet kept running")

    def _directory_usable(self) -> bool:
        directory = self._directory
        if not directory.is_dir():
            self._log.report("directory", "missing", logging.ERROR,
                             "device-plugin directory %s does not exist: is the kubelet running on this node? "
                             "Set the right one with --device-plugin-dir (plugin.device_plugin_dir); "
                             "serving as soon as it appears", directory)
            return False
        if not os.access(directory, os.W_OK | os.X_OK):
            self._log.report("directory", "read-only", logging.ERROR,
                             "device-plugin directory %s is not writable by this process (uid %d): cannot create "
                             "sockets there; serving as soon as it is", directory, os.getuid())
            return False
        self._log.clear("directory", logging.INFO, "device-plugin directory %s is usable now", directory)
        return True

    def _inventories_of(self, devices: Sequence[base.Device]) -> dict[str, inventory_mod.Inventory]:
        wanted = {}
        for resource, members in inventory_mod.group_by_resource(devices).items():
            problem = naming.resource_name_problem(resource)
            if problem is not None:
                self._log.report(f"name:{resource}", problem, logging.ERROR,
                                 "not serving %d devices under resource name %r: the kubelet would refuse it (%s)",
                                 len(members), resource, problem)
                continue
            wanted[resource] = inventory_mod.Inventory.build(resource, members, replicas=self._config.replicas)
        return wanted

    def _start(self, resource: str, inventory: inventory_mod.Inventory) -> _Endpoint | None:
        socket_path = self._directory / self._socket_name(resource)
        server = server_mod.ResourceServer(
            inventory, socket_path, backend=self._backend, limits=self._limits(),
            cdi_prefix=self._config.cdi_prefix if self._config.cdi_enabled else None)
        try:
            server.start()
        except server_mod.SocketInUse:
            raise
        except errors.RegistrationError as err:
            self._log.report(f"start:{resource}", str(err), logging.ERROR, "%s; retrying", err)
            return None
        self._log.clear(f"start:{resource}", logging.INFO, "serving %s again", resource)
        registrar = registration.Registrar(self._directory, resource, socket_path.name, self._pulse)
        registrar.start()
        endpoint = _Endpoint(server, registrar)
        self._endpoints[resource] = endpoint
        return endpoint

    def _socket_name(self, resource: str) -> str:
        # A resource keeps its socket name for the life of the process, even across restarts.
        if resource not in self._socket_names:
            taken = set(self._socket_names.values())
            self._socket_names[resource] = naming.socket_name(resource, taken=taken)
        return self._socket_names[resource]

    def _limits(self) -> allocation.Limits:
        maximum = None
        if isinstance(self._backend, base.SupportsAllocationLimit):
            maximum = self._backend.max_devices_per_container()
        return allocation.Limits(replicas=self._config.replicas,
                                 fail_requests_greater_than_one=self._config.fail_requests_greater_than_one,
                                 max_devices_per_container=maximum)

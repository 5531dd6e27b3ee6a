"""Device snapshots in, one served and registered gRPC endpoint per resource out (Intel's manager model).

The manager compares each fresh ``backend.devices()`` snapshot with the last one: a new resource gets a
server and a registration, a vanished resource's server is stopped, and a changed resource publishes a
new inventory to its ListAndWatch streams. It also restarts endpoints the kubelet has forgotten (its
restart deleted our socket or recreated kubelet.sock), under a crash-loop guard.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from krakenplug import errors
from krakenplug.backends import base
from krakenplug.plugin import allocation, naming, registration, watcher
from krakenplug.plugin import inventory as inventory_mod
from krakenplug.plugin import server as server_mod
from krakenplug.settings import PluginSettings

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Endpoint:
    server: server_mod.ResourceServer
    registrar: registration.Registrar

    def stop(self) -> None:
        self.registrar.cancel()  # first: a Register in flight must not dial a server that is going away
        self.server.stop()


class Manager:
    def __init__(self, backend: Any, config: PluginSettings) -> None:
        self._backend = backend
        self._config = config
        self._directory = Path(config.device_plugin_dir)
        self._inventories: dict[str, inventory_mod.Inventory] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._socket_names: dict[str, str] = {}
        self._reported: dict[str, str] = {}  # problem key -> last message, so a repeating problem logs once
        self._guard = watcher.RestartGuard(limit=config.restart_limit, window_seconds=config.restart_window_seconds)

    @property
    def endpoints(self) -> dict[str, server_mod.ResourceServer]:
        """The resources served right now and their servers."""
        return {resource: endpoint.server for resource, endpoint in self._endpoints.items()}

    def refresh(self) -> None:
        """Re-reads the devices and brings servers and snapshots in line with them."""
        try:
            devices = list(self._backend.devices())
        except Exception as err:  # noqa: BLE001 - keep serving the last snapshot whatever the backend's failure
            self._report("devices", logging.WARNING, "reading devices from backend %s failed, keeping the last "
                         "snapshot: %s", getattr(self._backend, "name", "?"), err)
            return
        self._forget("devices")
        wanted = self._inventories_of(devices)
        for resource in sorted(set(self._inventories) - set(wanted)):
            logger.info("resource %s has no devices any more; stopping its server", resource)
            endpoint = self._endpoints.pop(resource, None)
            if endpoint is not None:
                endpoint.stop()
        for resource, inventory in wanted.items():
            previous = self._inventories.get(resource)
            if previous is None or previous.advertised != inventory.advertised:
                logger.info("%s: %s", resource, inventory.summary())
            endpoint = self._endpoints.get(resource)
            if endpoint is not None:
                endpoint.server.publish(inventory)
        self._inventories = wanted
        self.reconcile()

    def reconcile(self) -> None:
        """Starts the servers that should run but do not (new resources, or a start that failed before)."""
        for resource, inventory in self._inventories.items():
            if resource not in self._endpoints:
                self._start(resource, inventory)

    def check_kubelet(self) -> None:
        """Restarts every endpoint the kubelet has forgotten; raises RegistrationError in a crash loop."""
        reasons = {}
        for resource, endpoint in self._endpoints.items():
            reason = watcher.restart_reason(endpoint.server, endpoint.registrar)
            if reason is not None:
                reasons[resource] = reason
        if not reasons:
            return
        self._guard.record("; ".join(sorted(set(reasons.values()))))
        for resource, reason in reasons.items():
            logger.info("restarting the %s server and registering again: %s", resource, reason)
            self._endpoints.pop(resource).stop()
            self._start(resource, self._inventories[resource])

    def close(self) -> None:
        """Stops every server and removes its socket."""
        while self._endpoints:
            _, endpoint = self._endpoints.popitem()
            endpoint.stop()

    def _inventories_of(self, devices: list[base.Device]) -> dict[str, inventory_mod.Inventory]:
        wanted = {}
        for resource, members in inventory_mod.group_by_resource(devices).items():
            problem = naming.resource_name_problem(resource)
            if problem is not None:
                self._report(f"name:{resource}", logging.ERROR, "not serving %d devices under resource name %r: "
                             "the kubelet would refuse it (%s)", len(members), resource, problem)
                continue
            wanted[resource] = inventory_mod.Inventory.build(resource, members, replicas=self._config.replicas)
        return wanted

    def _start(self, resource: str, inventory: inventory_mod.Inventory) -> None:
        socket_path = self._directory / self._socket_name(resource)
        server = server_mod.ResourceServer(
            inventory, socket_path, backend=self._backend, limits=self._limits(),
            cdi_prefix=self._config.cdi_prefix if self._config.cdi_enabled else None)
        try:
            server.start()
        except errors.RegistrationError as err:
            self._report(f"start:{resource}", logging.ERROR, "%s; retrying at the next rescan", err)
            return
        self._forget(f"start:{resource}")
        registrar = registration.Registrar(self._directory, resource, socket_path.name)
        registrar.start()
        self._endpoints[resource] = _Endpoint(server, registrar)

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

    def _report(self, key: str, level: int, message: str, *args: Any) -> None:
        text = message % args
        if self._reported.get(key) != text:
            logger.log(level, message, *args)
        else:
            logger.debug(message, *args)
        self._reported[key] = text

    def _forget(self, key: str) -> None:
        if self._reported.pop(key, None) is not None and key == "devices":
            logger.info("reading devices from backend %s works again", getattr(self._backend, "name", "?"))

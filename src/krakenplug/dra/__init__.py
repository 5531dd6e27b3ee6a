"""The DRA driver component: this node's devices as ResourceSlices, prepared for pods through CDI.

``run`` is the component's entry point (``krakenplug run`` with ``dra.allocation_mode: dra``). It
publishes the hub's snapshots as ResourceSlices of driver ``<backend>.krakenplug.pcl.ac.cn``, serves the
kubelet's DRA plugin API (v1 and v1beta1) and the health stream on ``<plugins_dir>/<driver>/dra.sock``,
and keeps a registration socket in the kubelet's plugin registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import grpc

from krakenplug import resource_names as names
from krakenplug.api import dra_v1_pb2_grpc as dra_grpc
from krakenplug.api import dra_v1beta1_pb2_grpc as dra_beta_grpc
from krakenplug.api import drahealth_v1alpha1_pb2_grpc as health_grpc
from krakenplug.api import pluginregistration_v1_pb2_grpc as reg_grpc
from krakenplug.backends import base
from krakenplug.cluster import config as cluster_config
from krakenplug.dra import kube, server, service, slices, topology
from krakenplug.dra.checkpoint import Checkpoint
from krakenplug.dra.claimcache import ClaimCache
from krakenplug.dra.prepare import Preparer
from krakenplug.dra.publisher import SlicePublisher, run_publisher
from krakenplug.hub import DeviceHub
from krakenplug.settings import Settings

__all__ = ["run"]

logger = logging.getLogger(__name__)

_JOIN_SECONDS = 10.0


def run(settings: Settings, hub: DeviceHub, stop: threading.Event) -> None:
    """Serves until ``stop`` is set; the slices stay published (a restarted agent adopts them)."""
    config = settings.dra
    node = settings.node_name
    driver = names.driver_name(config.driver_name, settings.backend)
    plugin_dir = config.plugins_dir / driver
    registration_path, dra_path = server.socket_paths(config.registry_dir, plugin_dir, driver,
                                                      config.rolling_update_uid)
    api = kube.ResourceApi(lambda: cluster_config.connect(config.kubeconfig), timeout_seconds=config.api_timeout_seconds)
    backend = hub.backend
    driver_version = backend.driver_version()

    def build(devices: Sequence[base.Device], generation: int, partitionable: bool) -> slices.Pool:
        return slices.build_pool(devices, driver=driver, node=node, generation=generation,
                                 partitionable=partitionable,
                                 driver_version=driver_version,
                                 pcie_root=lambda bus: topology.pcie_root(config.sysfs_root, bus),
                                 max_per_slice=config.max_devices_per_slice,
                                 share_step_mb=config.share_memory_step_mb)

    members_of: list[tuple[int, Mapping[str, Sequence[base.Device]]]] = []  # (snapshot version, its members)

    def current_devices() -> Mapping[str, Sequence[base.Device]]:
        # Prepare's path: the name map is built once per snapshot version, not once per claim.
        snapshot = hub.snapshot()
        known = members_of[0] if members_of else None
        if known is None or known[0] != snapshot.version:
            known = (snapshot.version, slices.members(snapshot.devices))
            members_of[:] = [known]
        return known[1]

    cache = ClaimCache(api, driver=driver, pool=node) if config.watch_claims else None
    checkpoint = Checkpoint(plugin_dir / "checkpoint.json")
    preparer = Preparer(api=api, backend=backend, devices=current_devices, driver=driver, node=node,
                        cdi_dir=settings.cdi_dir, checkpoint=checkpoint,
                        cached=cache.get if cache is not None else lambda namespace, name, uid: None)
    swept = preparer.sweep()
    if swept:
        logger.info("removed %d CDI spec(s) of claims no longer prepared", swept)
    dra_servicer = service.DraServicer(preparer)
    health = service.HealthServicer(hub, pool=node, name_of=lambda device: names.dns_label(device.id),
                                    devices_of=slices.published,
                                    timeout_seconds=config.health_timeout_seconds)

    def add_dra(grpc_server: grpc.aio.Server) -> None:
        dra_grpc.add_DRAPluginServicer_to_server(dra_servicer, grpc_server)
        dra_beta_grpc.add_DRAPluginServicer_to_server(service.DraBetaServicer(dra_servicer), grpc_server)
        health_grpc.add_DRAResourceHealthServicer_to_server(health, grpc_server)

    dra_socket = server.SocketServer(dra_path, add_dra, what=f"DRA driver {driver}")
    resync, wake_publisher = threading.Event(), threading.Event()

    def registered() -> None:  # the kubelet deletes the slices of a driver it had not registered: list again
        resync.set()
        wake_publisher.set()

    registration = service.RegistrationServicer(driver, str(dra_socket.path), on_registered=registered)
    registration_socket = server.SocketServer(
        registration_path,
        lambda grpc_server: reg_grpc.add_RegistrationServicer_to_server(registration, grpc_server),
        what=f"DRA registration of {driver}")
    publisher = SlicePublisher(api, node=node, driver=driver, build=build)
    publishing = threading.Thread(
        target=run_publisher, args=(publisher, hub, stop, wake_publisher),
        kwargs={"retry_initial": config.retry_initial_seconds, "retry_max": config.retry_max_seconds,
                "resync": resync},
        name="dra-slices", daemon=True)
    logger.info("DRA driver %s starting on node %s: registry %s, plugin dir %s, CDI dir %s", driver, node,
                config.registry_dir, plugin_dir, settings.cdi_dir)
    try:
        dra_socket.start()
        for path in server.remove_dead_sockets(config.registry_dir, f"{driver}-*reg.sock",
                                               keep=registration_socket.path):
            logger.info("removed the dead registration socket %s", path)
        registration_socket.start()
        publishing.start()
        if cache is not None:
            threading.Thread(target=cache.run, args=(stop,), name="dra-claims", daemon=True,
                             kwargs={"retry_initial": config.retry_initial_seconds,
                                     "retry_max": config.retry_max_seconds}).start()
        server.keep_serving([dra_socket, registration_socket], stop)
    finally:
        wake_publisher.set()  # stop is set: the publisher ends
        health.close()
        registration_socket.stop()
        dra_socket.stop()
        checkpoint.close()
        if publishing.ident is not None:
            publishing.join(timeout=_JOIN_SECONDS)
        logger.info("DRA driver %s stopped", driver)

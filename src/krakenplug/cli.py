"""The ``krakenplug`` command: parse settings once, open the backend, run the enabled components.

Components are imported lazily by name so that a command like ``krakenplug devices`` never loads
gRPC servers or HTTP stacks, and each component stays independent of the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from krakenplug import __version__, backends, errors, hub, logs, settings
from krakenplug.backends import base

logger = logging.getLogger(__name__)

COMPONENTS = ("plugin", "exporter", "discovery")
EXIT_CONFIG = 2
EXIT_BACKEND = 3


DESCRIPTION = """\
KrakenPlug: one node agent for AI accelerators on Kubernetes (NVIDIA, Huawei Ascend, Cambricon,
Kunlunxin, StreamComputing, and a fake backend for trying it out): a kubelet device plugin, a
Prometheus exporter and node labels, all from one view of the node's devices."""

EPILOG = """\
examples:
  krakenplug demo                       kubelet simulator + agent on fake devices, no cluster needed
  krakenplug devices                    the devices the default backend (fake) sees
  krakenplug devices --backend nvidia   the GPUs NVML reports on this machine
  krakenplug run --config FILE          the node agent, as the Helm chart starts it
  krakenplug run --help                 every agent flag with its default

Flags override environment variables (KRAKENPLUG_<SECTION>__<FIELD>), which override the --config
file, which overrides the defaults. Exit codes: 0 ok, 1 a component failed, 2 invalid settings,
3 the backend failed to initialise (run: only with --fail-on-init-error)."""


def _default(path: str) -> str:
    """The settings default of a dotted field, for --help (every flag itself defaults to "not given")."""
    value: Any = settings.Settings.model_construct()  # defaults only: no environment, no file, no validation
    for name in path.split("."):
        value = getattr(value, name)
    return str(value)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", help="backend name: %s (default: %s)" % (", ".join(backends.names()),
                                                                             _default("backend")))
    parser.add_argument("--config", help="YAML config file (the chart's ConfigMap); env KRAKENPLUG_CONFIG")
    parser.add_argument("--fake-devices", metavar="FILE", help="device file of the fake backend")
    parser.add_argument("--node-name", help="this node's name (default: env NODE_NAME, else the hostname)")
    parser.add_argument("--backend-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the selected backend (backends.<name>.KEY), repeatable")
    parser.add_argument("--fail-on-init-error", action="store_true", default=None,
                        help="exit 3 if the vendor library cannot be initialised (default: serve zero devices "
                             "and retry every minute)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="log level, to stderr (default: %s)" % _default("log.level"))
    parser.add_argument("--log-format", choices=["plain", "json"],
                        help="plain for people, json for log pipelines (default: %s)" % _default("log.format"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="krakenplug", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"krakenplug {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the node agent (device plugin, exporter, discovery as enabled)",
                         description="Runs the components that settings enable on one shared backend until "
                                     "SIGTERM or SIGINT. Flags override the config file and the environment.")
    _add_common(run)
    run.add_argument("--device-plugin-dir", metavar="DIR",
                     help="kubelet device-plugin directory (default: %s)" % _default("plugin.device_plugin_dir"))
    run.add_argument("--pod-resources-socket", metavar="PATH",
                     help="kubelet PodResources socket (default: %s)" % _default("exporter.pod_resources_socket"))
    run.add_argument("--metrics-address", metavar="HOST:PORT",
                     help="exporter listen address (default: %s)" % _default("exporter.address"))
    run.add_argument("--web-config-file", metavar="FILE",
                     help="exporter web config (TLS, basic auth), as Prometheus exporters' --web.config.file "
                          "(exporter.web_config_file; default: plain HTTP)")
    run.add_argument("--replicas", type=int,
                     help="time-slicing replicas per device (default: %s)" % _default("plugin.replicas"))
    run.add_argument("--sriov-num-vfs", type=int, help="SR-IOV VFs per device for backends that support it")
    run.add_argument("--kubeconfig", metavar="FILE",
                     help="kubeconfig for the API server (discovery, SR-IOV, DRA); default: env KUBECONFIG, "
                          "else the pod's service account, else ~/.kube/config, as kubectl does")
    run.add_argument("--allocation-mode", choices=["device-plugin", "dra"],
                     help="hand devices out through the device plugin or the DRA driver (dra.allocation_mode)")
    for component in COMPONENTS:
        run.add_argument(f"--{component}", dest=component, action=argparse.BooleanOptionalAction, default=None,
                         help=f"enable or disable the {component} component "
                              f"(default: {'on' if _default(component + '.enabled') == 'True' else 'off'})")

    devices = sub.add_parser("devices", help="print the devices a backend sees",
                             description="Prints the devices a backend sees, once. Exits 3 with the reason "
                                         "when the backend cannot be opened (no driver, a broken fake file).")
    _add_common(devices)
    devices.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="self-contained demo: kubelet simulator + agent on the fake backend")
    demo.add_argument("--keep-running", action="store_true", help="keep serving until Ctrl-C")
    demo.add_argument("--dra", action="store_true",
                      help="the DRA driver instead: ResourceSlice, a claim prepared into a CDI spec, a health taint")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Maps flags onto the settings tree; flags that were not given stay None and are dropped."""
    def get(name: str) -> Any:
        return getattr(args, name, None)

    backend_opts: dict[str, Any] = {}
    for item in get("backend_opt") or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.ConfigError(f"--backend-opt: expected KEY=VALUE, got {item!r}")
        backend_opts[key] = value
    if get("sriov_num_vfs") is not None:
        backend_opts["sriov_num_vfs"] = get("sriov_num_vfs")
    tree: dict[str, Any] = {
        "backend": get("backend"),
        "node_name": get("node_name"),
        "fail_on_init_error": get("fail_on_init_error"),
        "log": {"level": get("log_level"), "format": get("log_format")},
        "plugin": {"device_plugin_dir": get("device_plugin_dir"), "replicas": get("replicas"),
                   "enabled": get("plugin")},
        "exporter": {"address": get("metrics_address"), "pod_resources_socket": get("pod_resources_socket"),
                     "web_config_file": get("web_config_file"), "enabled": get("exporter")},
        "discovery": {"enabled": get("discovery"), "kubeconfig": get("kubeconfig")},
        "dra": {"allocation_mode": get("allocation_mode"), "kubeconfig": get("kubeconfig")},
        "backends": {},
    }
    if get("fake_devices"):
        tree["backends"]["fake"] = {"devices_file": get("fake_devices")}
    if backend_opts:
        tree["backends"]["__selected__"] = backend_opts
    return tree


def load_settings(args: argparse.Namespace) -> settings.Settings:
    tree = _overrides(args)
    selected = tree["backends"].pop("__selected__", None)
    loaded = settings.load(config_file=getattr(args, "config", None), overrides=tree)
    if selected:
        merged = {**loaded.backend_options(loaded.backend), **selected}
        loaded = settings.load(config_file=getattr(args, "config", None),
                               overrides={**tree, "backends": {**tree["backends"], loaded.backend: merged}})
    return loaded


def cmd_devices(config: settings.Settings, args: argparse.Namespace) -> int:
    # Not open_backend(): its zero-device fallback and DaemonSet advice are for the agent, not a one-shot look.
    backend = backends.create(config)
    try:
        backend.open()
    except errors.BackendUnavailable as err:
        print(f"krakenplug devices: backend {config.backend} is unavailable: {err}", file=sys.stderr)
        return EXIT_BACKEND
    try:
        snapshot = hub.DeviceHub(backend, name=config.backend).refresh()  # one read, as the agent's hub reads
        library = backend.library_info() if isinstance(backend, base.SupportsLibraryInfo) else None
    finally:
        backend.close()
    if snapshot.error:
        print(f"krakenplug devices: reading devices from backend {config.backend} failed: {snapshot.error}",
              file=sys.stderr)
        return EXIT_BACKEND
    found = snapshot.devices
    rows = [{
        "id": d.id, "index": d.index, "vendor": d.vendor, "model": d.model,
        "memory_total_mb": d.memory_total_mb, "numa_node": d.numa_node, "health": d.health.value,
        "health_reason": d.health_reason, "pci_bus_id": d.pci_bus_id, "resource": d.resource,
        "library": library.as_dict() if library else None,
    } for d in found]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if library is not None:
        print(f"backend {config.backend}: library {library.library or '-'}, API {library.api}, path {library.path}"
              + (f" ({library.reason})" if library.reason else ""))
    if not rows:
        print(f"no devices found by backend {config.backend}")
        return 0
    columns = ["index", "id", "model", "memory_total_mb", "numa_node", "health", "pci_bus_id", "resource"]
    headers = ["INDEX", "ID", "MODEL", "MEMORY(MB)", "NUMA", "HEALTH", "PCI", "RESOURCE"]
    table = [headers] + [["-" if r[c] is None else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0


def selected_components(config: settings.Settings) -> list[str]:
    """The enabled components; allocation mode dra serves the DRA driver instead of the device plugin."""
    enabled = [name for name in COMPONENTS if getattr(config, name).enabled]
    if config.dra.allocation_mode == "dra":  # one allocation mode per vendor: no device is handed out twice
        enabled = [name for name in enabled if name != "plugin"] + ["dra"]
    return enabled


def hub_poll_seconds(config: settings.Settings) -> float:
    """How often the device hub re-reads the backend: ``plugin.rescan_interval_seconds``, or the backend's
    ``health_poll_interval_seconds`` where that asks for more often (health comes from the same read)."""
    return min(config.plugin.rescan_interval_seconds, config.selected_options().health_poll_interval_seconds)


def cmd_run(config: settings.Settings, stop: threading.Event | None = None) -> int:
    """Runs every enabled component on one shared backend until SIGTERM/SIGINT or ``stop``."""
    stop = stop or threading.Event()
    enabled = selected_components(config)
    if not enabled:
        raise errors.ConfigError("plugin.enabled, exporter.enabled, discovery.enabled: all are false; nothing to run")
    backend = backends.open_backend(config)
    if isinstance(backend, base.SupportsSriov):  # the backend manages VFs: keep them at the wanted count
        enabled.append("sriov")
    devices = hub.DeviceHub(backend, poll_seconds=hub_poll_seconds(config), name=config.backend)
    devices.start(stop)
    failures: list[str] = []
    refused: list[str] = []  # components that refused their settings: exit 2, as for any invalid setting

    def _run(name: str) -> None:
        try:
            importlib.import_module(f"krakenplug.{name}").run(config, devices, stop)
        except errors.ConfigError as err:  # a setting that cannot work (busy port, bad file): one line, no traceback
            logger.error("component %s cannot start: %s", name, err)
            refused.append(name)
            stop.set()
        except errors.RegistrationError as err:  # another plugin on our socket, a crash loop: one clear line
            logger.error("component %s stopped: %s", name, err)
            failures.append(name)
            stop.set()
        except Exception:  # a component that dies takes the agent down so the kubelet restarts the pod
            logger.exception("component %s failed", name)
            failures.append(name)
            stop.set()

    threads = [threading.Thread(target=_run, args=(name,), name=name, daemon=True) for name in enabled]
    logger.info("krakenplug %s starting on node %s with backend %s: %s", __version__, config.node_name,
                config.backend, ", ".join(enabled))
    for thread in threads:
        thread.start()
    stop.wait()  # no timer: a signal interrupts the wait and its handler sets stop (idle means idle)
    for thread in threads:
        thread.join(timeout=10)
    devices.join()
    backend.close()
    logger.info("krakenplug stopped")
    return EXIT_CONFIG if refused else 1 if failures else 0


def _exit_now_if_handlers_are_stuck(code: int) -> None:
    """Ends the process at once when a gRPC handler never returned (stuck in a vendor call): everything
    else is stopped and its sockets removed, but the interpreter's exit would wait for that worker for ever."""
    if "krakenplug.grpc_unix" not in sys.modules:  # no gRPC server ran: nothing can be stuck
        return
    from krakenplug import grpc_unix

    stuck = grpc_unix.stuck_handlers()
    if stuck:
        logger.warning("exiting without waiting for the call(s) still running in %s", ", ".join(stuck))
        logging.shutdown()
        os._exit(code)


def _install_signal_handlers(stop: threading.Event) -> None:
    def _handle(signum: int, _frame: Any) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        logs.configure(level="warning")
        if args.dra:
            if args.keep_running:
                print("krakenplug: demo --dra does not take --keep-running", file=sys.stderr)
                return EXIT_CONFIG
            return int(importlib.import_module("krakenplug.demo_dra").main())
        return int(importlib.import_module("krakenplug.demo").main(keep_running=args.keep_running))
    try:
        config = load_settings(args)
    except errors.ConfigError as err:
        print(f"krakenplug: {err}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(level=config.log.level, fmt=config.log.format)
    try:
        if args.command == "devices":
            return cmd_devices(config, args)
        stop = threading.Event()
        _install_signal_handlers(stop)
        code = cmd_run(config, stop)
        _exit_now_if_handlers_are_stuck(code)
        return code
    except errors.ConfigError as err:
        print(f"krakenplug: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except errors.BackendUnavailable as err:
        logger.error("backend %s failed to initialise and fail_on_init_error is set: %s", config.backend, err)
        return EXIT_BACKEND

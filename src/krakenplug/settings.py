"""Settings: parsed once by the CLI and passed down; nothing else reads the environment.

Sources, highest priority first:

1. command-line flags of ``krakenplug run`` (passed in as overrides),
2. environment variables ``KRAKENPLUG_<SECTION>__<FIELD>`` (``NODE_NAME`` is accepted for the node name,
   as the chart sets it from the downward API),
3. the YAML config file given by ``--config`` or ``KRAKENPLUG_CONFIG`` (the chart renders it from
   values.yaml into a ConfigMap),
4. the defaults below.

The file carries ``version: v1``; another version is refused. Vendor-specific options live under
``backends.<name>`` and are validated by that backend's own options model, so only the backend module
knows its vendor.
"""

from __future__ import annotations

import contextvars
import difflib
import importlib
import json
import os
import re
import socket
from collections.abc import Callable, Mapping
from importlib.abc import Traversable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pydantic
import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SerializeAsAny, ValidatorFunctionWrapHandler, \
    field_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError, \
    YamlConfigSettingsSource

from krakenplug import errors
from krakenplug.backends.base import BackendOptions

ENV_PREFIX = "KRAKENPLUG_"
CONFIG_ENV = "KRAKENPLUG_CONFIG"
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KiB; /dev/zero or a log file by mistake must not be read whole
MAX_ENV_BYTES = 64 << 10
MAX_YAML_DEPTH = 32


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Root log level.")
    format: Literal["plain", "json"] = Field("plain", description="plain for people, json for log pipelines.")


class PluginSettings(_Section):
    enabled: bool = Field(True, description="Serve the kubelet device-plugin API.")
    device_plugin_dir: Path = Field(
        Path("/var/lib/kubelet/device-plugins"),
        description="Directory holding kubelet.sock; our sockets are created here too.",
    )
    replicas: int = Field(
        1, ge=1, le=1024,
        description="Time-slicing: schedulable IDs advertised per physical device (<id>::<k> when above 1).",
    )
    fail_requests_greater_than_one: bool = Field(
        False, description="With replicas above 1, refuse a container asking for more than one replica.",
    )
    cdi_enabled: bool = Field(False, description="Also return CDI device names (<cdi_prefix>/<vendor>=<id>).")
    cdi_prefix: str = Field("krakenplug.pcl.ac.cn", description="Vendor part of the CDI kind.")
    rescan_interval_seconds: float = Field(
        5.0, gt=0, description="The device hub's poll for every component: how often devices and health are "
                               "re-read (sooner when backends.<name>.health_poll_interval_seconds is shorter; "
                               "backend events re-read at once).",
    )
    restart_limit: int = Field(5, ge=1, description="Crash-loop guard: this many server restarts ...")
    restart_window_seconds: float = Field(3600.0, gt=0, description="... within this window is fatal.")


class ExporterSettings(_Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics.")
    address: str = Field(
        "0.0.0.0:9478",
        description="HOST:PORT to listen on; 9478 avoids the ports of dcgm (9400), npu (8082), mlu (30108) exporters.",
    )
    pod_resources_socket: Path = Field(
        Path("/var/lib/kubelet/pod-resources/kubelet.sock"), description="Kubelet PodResources API socket.",
    )
    pod_resources_refresh_seconds: float = Field(
        5.0, gt=0, description="Background refresh period of the pod-to-device map (not once per scrape).",
    )
    collect_timeout_seconds: float = Field(3.0, gt=0, description="Bound on vendor reads during one scrape.")
    base_unit_metrics: bool = Field(False, description="Also export _bytes and _ratio twins of MB/% metrics.")
    request_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="A client must send its whole request (TLS handshake included) within this.",
    )
    web_config_file: Path | None = Field(
        None, description="exporter-toolkit web config (TLS, basic auth); None serves plain HTTP to anyone.",
    )

    @field_validator("address")
    @classmethod
    def _host_and_port(cls, address: str) -> str:
        listen_address(address)
        return address


def listen_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6, empty host = all interfaces) -> (host, port); ValueError says why."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected HOST:PORT with a port from 0 to 65535 (IPv6 as [::1]:9478)")
    if host.startswith("[") and host.endswith("]"):
        family, host = socket.AF_INET6, host[1:-1]
    else:
        family = socket.AF_INET
    try:
        if host and (family == socket.AF_INET6 or re.fullmatch(r"[0-9.]+", host)):
            socket.inet_pton(family, host)
    except OSError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if host and family == socket.AF_INET and not re.fullmatch(
            r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
            host):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    return host or "0.0.0.0", int(port)


class DiscoverySettings(_Section):
    enabled: bool = Field(False, description="Label this node with vendor, model and memory of its devices.")
    interval_seconds: float = Field(300.0, gt=0, description="Slow re-check period; device changes re-check at once.")
    kubeconfig: Path | None = Field(None, description="None: in-cluster config, else this kubeconfig file.")
    features_file: Path | None = Field(
        None, description="Also write the labels to this node-feature-discovery features.d file.",
    )
    patch_node: bool = Field(
        True, description="Write labels to the Node through the API server; false leaves that to NFD (features_file).",
    )
    api_timeout_seconds: float = Field(10.0, gt=0, description="Bound on each API server request.")
    retry_initial_seconds: float = Field(1.0, gt=0, description="First retry delay after an API error; doubles.")
    retry_max_seconds: float = Field(60.0, gt=0, description="Cap of the doubling retry delay.")


class DraSettings(_Section):
    """The DRA driver (resource.k8s.io/v1); a vendor runs in one allocation mode at a time."""

    allocation_mode: Literal["device-plugin", "dra"] = Field(
        "device-plugin",
        description="device-plugin: the kubelet device-plugin API hands out devices; dra: ResourceSlices and "
                    "the kubelet DRA plugin API do (the device plugin then does not serve, so no device is given twice).",
    )
    driver_name: str | None = Field(
        None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", max_length=63,
        description="DRA driver name (a DNS subdomain); None: <backend>.krakenplug.pcl.ac.cn.",
    )
    registry_dir: Path = Field(
        Path("/var/lib/kubelet/plugins_registry"), description="The kubelet's plugin registry (registration socket).",
    )
    plugins_dir: Path = Field(
        Path("/var/lib/kubelet/plugins"), description="Parent of <driver>/, which holds dra.sock and the checkpoint.",
    )
    rolling_update_uid: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$",
        description="Pod UID (downward API): suffixes both sockets so an old and a new pod can serve side by side.",
    )
    kubeconfig: Path | None = Field(None, description="None: in-cluster config, else this kubeconfig file.")
    api_timeout_seconds: float = Field(10.0, gt=0, description="Bound on each API server request.")
    retry_initial_seconds: float = Field(1.0, gt=0, description="First retry delay after an API error; doubles.")
    retry_max_seconds: float = Field(60.0, gt=0, description="Cap of the doubling retry delay.")
    max_devices_per_slice: int = Field(
        128, ge=1, le=128, description="Devices per ResourceSlice (the API allows 128, 64 with taints); more split.",
    )
    health_timeout_seconds: int = Field(
        60, ge=5, description="The kubelet marks a device Unknown without a health update this long; we resend at a third.",
    )
    sysfs_root: Path = Field(Path("/sys"), description="Where the PCIe root of each device is looked up.")
    share_memory_step_mb: int = Field(
        0, ge=0,
        description="0: a device goes to one claim. Above 0: devices allow several claims "
                    "(allowMultipleAllocations), each consuming memory in steps of this many MB (DRAConsumableCapacity).",
    )
    watch_claims: bool = Field(
        False, description="Keep a watch cache of the ResourceClaims allocated here, so Prepare needs no GET "
                           "(RBAC list/watch on resourceclaims; every agent then sees every claim event).",
    )


class Settings(BaseSettings):
    """The root of all settings; see the module docstring for the source order."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", populate_by_name=True,
    )

    version: Literal["v1"] = Field("v1", description="Config schema version; other versions are refused.")
    backend: str = Field("fake", description="Backend name: fake, nvidia, ascend, cambricon, kunlun, streamcomputing.")
    node_name: str = Field(
        default_factory=socket.gethostname,
        validation_alias=AliasChoices("node_name", "KRAKENPLUG_NODE_NAME", "NODE_NAME"),
        description="This node's name (downward API spec.nodeName in the chart).",
    )
    fail_on_init_error: bool = Field(
        False, description="Exit non-zero when the vendor library fails to load instead of serving zero devices.",
    )
    log: LogSettings = LogSettings()
    plugin: PluginSettings = PluginSettings()
    exporter: ExporterSettings = ExporterSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    dra: DraSettings = DraSettings()
    cdi_dir: Path = Field(
        Path("/var/run/cdi"), description="Where CDI specs are written (DRA claims; device plugin with cdi_enabled).",
    )
    backends: dict[str, SerializeAsAny[BackendOptions]] = Field(
        default_factory=dict,
        description="Options per backend (backends.<name>), each validated by the options model of that backend's "
                    "package, which the registry imports lazily: only backends named here are imported.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls, yaml_file=_CONFIG_FILE.get()))

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        known = _registry().names()
        if name not in known:
            raise PydanticCustomError("unknown_backend", "unknown backend '{name}'; known backends: {known}",
                                      {"name": name, "known": ", ".join(known)})
        return name

    @field_validator("backends", mode="wrap")
    @classmethod
    def _options_per_backend(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> dict[str, BackendOptions]:
        """``backends.<name>`` is validated by ``<name>``'s own options model (the discriminator is the key)."""
        raw: dict[str, Any] = handler({}) if value is None else value
        if not isinstance(raw, dict):
            wrong: dict[str, BackendOptions] = handler(value)  # pydantic reports the wrong type
            return wrong
        registry = _registry()
        typed: dict[str, BackendOptions] = {}
        problems: list[InitErrorDetails] = []
        for name, options in raw.items():
            if name not in registry.names():
                problems.append(InitErrorDetails(
                    type=PydanticCustomError("unknown_backend", "unknown backend '{name}'; known backends: {known}",
                                             {"name": name, "known": ", ".join(registry.names())}),
                    loc=(name,), input=options))
                continue
            try:
                typed[name] = registry.options_class(name).model_validate({} if options is None else options)
            except pydantic.ValidationError as err:
                problems += [InitErrorDetails(type=PydanticCustomError(p["type"], p["msg"]), loc=(name, *p["loc"]),
                                              input=p.get("input")) for p in err.errors()]
        if problems:
            raise pydantic.ValidationError.from_exception_data("backends", problems)
        return typed

    def selected_options(self) -> BackendOptions:
        """The typed options of the selected backend (its model's defaults when the file names none)."""
        return self.backends.get(self.backend) or _registry().options_class(self.backend)()

    def backend_options(self, name: str) -> dict[str, Any]:
        """The options set for backend ``name`` (defaults left out), as a plain mapping."""
        options = self.backends.get(name)
        return options.model_dump(exclude_unset=True) if options is not None else {}


def _registry() -> ModuleType:
    """The backend registry, imported on first use: it imports this module, and only it knows the vendors."""
    return importlib.import_module("krakenplug.backends")


# --- the config file -----------------------------------------------------------------------------------------

_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config_file", default=None)


class _ConfigFileSource(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, reading the file through :func:`read_config_file` (bounded, strict)."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        return read_config_file(Path(str(file_path)))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (no alias bombs), deep nesting (no RecursionError) and duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a config file", mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_cut(key)}",
                                                        key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_file(path: Path, *, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Parses a small YAML file strictly: bounded size, UTF-8, no aliases, no duplicate keys, bounded depth.

    Errors are ConfigError naming ``what`` (e.g. "config file /etc/krakenplug/config.yaml") and the line.
    """
    try:
        if not path.is_file():
            raise errors.ConfigError(f"{what}: not a regular file" if path.exists() else f"{what}: cannot read: "
                                     "No such file or directory")
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
    except OSError as err:
        raise errors.ConfigError(f"{what}: cannot read: {err.strerror}") from err
    if len(data) > max_bytes:
        raise errors.ConfigError(f"{what}: larger than {max_bytes} bytes; refusing to parse it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise errors.ConfigError(f"{what}: line {line}: not UTF-8 text (byte {err.start}: "
                                 f"{data[err.start:err.start + 1]!r})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1} column {mark.column + 1}:" if mark else ""
        raise errors.ConfigError(f"{what}:{where} invalid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise errors.ConfigError(f"{what}: invalid YAML: {_cut(str(err))}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parses the YAML config file into a mapping; errors name the file and the line."""
    what = f"config file {path}"
    data = read_yaml_file(Path(path), what=what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise errors.ConfigError(f"{what}: top level must be a mapping, got {type(data).__name__}")
    return data


# --- the environment -----------------------------------------------------------------------------------------

# Variables Kubernetes injects for a Service named krakenplug-...; not ours (the chart also turns them off).
_SERVICE_LINK = re.compile(r"^KRAKENPLUG_[A-Z0-9_]*_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)"
                           r"(_(PROTO|PORT|ADDR))?)?)$")


# Ours but not settings: the e2e suites' knobs, and what the fake backend gives workload containers.
_NOT_SETTINGS = ("KRAKENPLUG_E2E_", "KRAKENPLUG_VISIBLE_DEVICES")


def _known_variables() -> dict[str, FieldInfo]:
    """Every KRAKENPLUG_* name the environment source reads, mapped to its field."""
    known: dict[str, FieldInfo] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            variable = f"{prefix}{name.upper()}"
            known[variable] = field
            inner = field.annotation
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                walk(inner, variable + "__")

    walk(Settings, ENV_PREFIX)
    return known


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuses unknown ``KRAKENPLUG_*`` variables, oversized values and sections that are not JSON."""
    known = _known_variables()
    for variable, value in sorted(environ.items()):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV or _SERVICE_LINK.match(upper) \
                or upper.startswith(_NOT_SETTINGS):
            continue
        if len(value) > MAX_ENV_BYTES:
            raise errors.ConfigError(f"environment {variable}: value of {len(value)} characters is longer than "
                                     f"{MAX_ENV_BYTES}: {_cut(value)}")
        # backends.<name>[.<option>]: the names are the registry's, checked when the settings validate
        backend_option = upper.startswith(f"{ENV_PREFIX}BACKENDS__")
        if upper not in known and not backend_option:
            close = difflib.get_close_matches(upper, [*known, CONFIG_ENV], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise errors.ConfigError(f"environment {variable}: unknown setting{hint} (got {_cut(value)})")
        field = known.get(upper)
        section = field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        one_backend = backend_option and upper.count("__") == 1
        if section or one_backend or upper == f"{ENV_PREFIX}BACKENDS":
            try:
                json.loads(value)
            except ValueError as err:
                dotted = upper[len(ENV_PREFIX):].lower().replace("__", ".")
                raise errors.ConfigError(f"environment {variable}: {dotted} must be a JSON object ({err}) "
                                         f"(got {_cut(value)})") from None


# --- loading -------------------------------------------------------------------------------------------------

def load(*, config_file: Path | str | None = None, overrides: dict[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Builds the settings from every source; raises ConfigError naming the source, field and value."""
    environ = os.environ if environ is None else environ
    path = config_file or environ.get(CONFIG_ENV) or None
    check_environment(environ)
    config_path = Path(path) if path else None
    # A missing or unreadable file is an error, not an empty source; its tree also says where a bad value is.
    file = read_config_file(config_path) if config_path is not None else {}
    flags = _drop_none(overrides or {})
    token = _CONFIG_FILE.set(config_path)
    try:
        return Settings(**flags)
    except pydantic.ValidationError as err:
        raise errors.ConfigError(describe_validation_error(
            err, source=lambda loc: _source_of(loc, flags, environ, file, config_path))) from None
    except SettingsError as err:
        raise errors.ConfigError(f"environment: {_cut(str(err))}") from None
    finally:
        _CONFIG_FILE.reset(token)


def _source_of(loc: tuple[Any, ...], flags: dict[str, Any], environ: Mapping[str, str], file: dict[str, Any],
               config_path: Path | None) -> str:
    """Which source gave the value at ``loc`` (or its closest parent): the highest-priority one that has it."""
    upper = {key.upper() for key in environ}
    for depth in range(len(loc), 0, -1):
        prefix = loc[:depth]
        if _has(flags, prefix):
            return "command line"
        variable = ENV_PREFIX + "__".join(str(part).upper() for part in prefix)
        if variable in upper:
            return f"environment {variable}"
        if prefix == ("node_name",) and "NODE_NAME" in upper:
            return "environment NODE_NAME"
        if _has(file, prefix):
            return f"config file {config_path}"
    return "defaults"


def _has(tree: Any, loc: tuple[Any, ...]) -> bool:
    for part in loc:
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and isinstance(part, int) and 0 <= part < len(tree):
            tree = tree[part]
        else:
            return False
    return True


def describe_validation_error(err: pydantic.ValidationError, *,
                              source: str | Path | Callable[[tuple[Any, ...]], str] | None = None) -> str:
    """One line per problem: dotted field path, where it came from, pydantic's reason and the value (cut)."""
    lines = []
    for problem in err.errors():
        loc = tuple(problem["loc"])
        field = ".".join(str(part) for part in loc) or "(root)"
        where = f" ({source(loc)})" if callable(source) else ""
        lines.append(f"  {field}{where}: {problem['msg']} (got {_cut(problem.get('input'))})")
    header = f" in {source}" if source is not None and not callable(source) else ""
    return f"invalid settings{header}:\n" + "\n".join(lines)


def _cut(value: Any, limit: int = 120) -> str:
    """repr of ``value``, cut to ``limit`` characters so a huge value never floods the log."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    """CLI flags that were not given arrive as None and must not shadow env or file values."""
    result: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if not value:
                continue
        if value is not None:
            result[key] = value
    return result

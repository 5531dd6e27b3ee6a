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

import os
import socket
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from krakenplug import errors

CONFIG_ENV = "KRAKENPLUG_CONFIG"


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
        5.0, gt=0, description="How often the device list and health are re-read when the backend has no events.",
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
    device_poll_seconds: float = Field(
        5.0, gt=0, description="How often devices are re-read locally; the API server is asked only on a change.",
    )
    api_timeout_seconds: float = Field(10.0, gt=0, description="Bound on each API server request.")
    retry_initial_seconds: float = Field(1.0, gt=0, description="First retry delay after an API error; doubles.")
    retry_max_seconds: float = Field(60.0, gt=0, description="Cap of the doubling retry delay.")


class Settings(BaseSettings):
    """The root of all settings; see the module docstring for the source order."""

    model_config = SettingsConfigDict(
        env_prefix="KRAKENPLUG_", env_nested_delimiter="__", extra="forbid", populate_by_name=True,
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
    backends: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-backend options, validated by the backend's options model.",
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
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    def backend_options(self, name: str) -> dict[str, Any]:
        return dict(self.backends.get(name) or {})


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the file named by ``_config_file`` (set by :func:`load`), failing loudly when it is bad."""

    config_file: Path | None = None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return read_config_file(self.config_file) if self.config_file else {}


def read_config_file(path: Path) -> dict[str, Any]:
    """Parses a YAML config file into a mapping; errors name the file and the line."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise errors.ConfigError(f"config file {path}: cannot read: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise errors.ConfigError(f"config file {path}:{where}: invalid YAML: {getattr(err, 'problem', err)}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise errors.ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load(*, config_file: Path | str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Builds the settings from every source; raises ConfigError naming the field and value."""
    path = config_file or os.environ.get(CONFIG_ENV) or None
    _YamlFileSource.config_file = Path(path) if path else None
    try:
        return Settings(**_drop_none(overrides or {}))
    except pydantic.ValidationError as err:
        raise errors.ConfigError(describe_validation_error(err, source=path)) from err
    finally:
        _YamlFileSource.config_file = None


def describe_validation_error(err: pydantic.ValidationError, *, source: str | Path | None = None) -> str:
    """One line per problem: dotted field path, the offending value and pydantic's reason."""
    lines = []
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(root)"
        value = problem.get("input")
        lines.append(f"  {field}: {problem['msg']} (got {value!r})")
    where = f" in {source}" if source else ""
    return f"invalid settings{where}:\n" + "\n".join(lines)


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

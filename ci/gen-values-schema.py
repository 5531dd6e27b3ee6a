#!/usr/bin/env python3
"""Generates charts/krakenplug/values.schema.json from the agent's own settings models.

The schema is never edited by hand. What the agent validates comes from its models: the component
sections (plugin, exporter, discovery, log) from krakenplug.settings, each vendor's `options` from that
backend's options model, the fake vendor's `devices` from the fake backend's file model. Only what
exists in the chart alone (mounts, node selection, monitoring objects) is described here.

    python ci/gen-values-schema.py           # rewrite the schema
    python ci/gen-values-schema.py --check   # exit 1 when the committed schema differs (CI)
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "charts" / "krakenplug" / "values.schema.json"
sys.path.insert(0, str(ROOT / "src"))

from pydantic import BaseModel  # noqa: E402

from krakenplug import backends, settings  # noqa: E402
from krakenplug.backends import base  # noqa: E402

Schema = dict[str, Any]

_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
# A pattern whose text is the message: helm prints the pattern a value fails, so the error explains itself.
_RESERVED_RESOURCE_NAMES = [
    {"if": {"pattern": r"kubernetes\.io/"},
     "then": {"pattern": "^resource names under the kubernetes.io domain are reserved for Kubernetes$"}},
    {"if": {"pattern": r"^requests\."},
     "then": {"pattern": "^the requests. prefix is reserved for resource quota names$"}},
]

DEFINITIONS: dict[str, Schema] = {
    "port": {"description": "A TCP port, 1-65535. The second rule only applies to strings: it makes the error show "
                            "the value.",
             "allOf": [{"type": "integer", "minimum": 1, "maximum": 65535},
                       {"pattern": "^port numbers are integers from 1 to 65535$"}]},
    "resourceName": {"description": "An extended resource name as the kubelet accepts it: <DNS subdomain>/<name>, "
                                    "outside the kubernetes.io domain and not starting with requests.",
                     "type": "string", "maxLength": 317, "pattern": f"^{_DNS_SUBDOMAIN}/{_NAME}$",
                     "allOf": _RESERVED_RESOURCE_NAMES},
    "optionalResourceName": {"description": "An extended resource name, or empty for the backend's default.",
                             "type": "string", "maxLength": 317, "pattern": f"^$|^{_DNS_SUBDOMAIN}/{_NAME}$",
                             "allOf": _RESERVED_RESOURCE_NAMES},
    "resourceRules": {"description": "Per-model resource names; the first rule whose model glob matches wins.",
                      "type": "array", "items": {
                          "type": "object", "additionalProperties": False, "required": ["name", "models"],
                          "properties": {"name": {"$ref": "#/definitions/resourceName"},
                                         "models": {"type": "array", "minItems": 1,
                                                    "items": {"type": "string", "minLength": 1}}}}},
    "hostPath": {"description": "An absolute path.", "type": "string", "pattern": "^/"},
    "optionalHostPath": {"description": "An absolute path, or empty for none.", "type": "string",
                         "pattern": "^(/.*)?$"},
    "labelKey": {"description": "A Kubernetes label key.", "type": "string", "maxLength": 317,
                 "pattern": f"^({_DNS_SUBDOMAIN}/)?{_NAME}$"},
    "stringMap": {"type": "object", "additionalProperties": {"type": "string"}},
    "duration": {"description": "A Prometheus duration such as 30s or 1m30s.", "type": "string",
                 "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"},
    "image": {"type": "object", "additionalProperties": False, "properties": {
        "repository": {"type": "string", "minLength": 1}, "tag": {"type": "string"},
        "digest": {"type": "string", "pattern": "^(sha256:[a-f0-9]{64})?$"},
        "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}}},
    "envList": {"type": "array", "items": {"type": "object", "required": ["name"],
                                           "properties": {"name": {"type": "string", "minLength": 1}}}},
    "probe": {"type": ["object", "null"]},
    "hostMount": {"description": "A host path mounted into the agent; an empty hostPath leaves it out.",
                  "type": "object", "additionalProperties": False, "properties": {
                      "hostPath": {"$ref": "#/definitions/optionalHostPath"},
                      "mountPath": {"$ref": "#/definitions/hostPath"},
                      "readOnly": {"type": "boolean"},
                      "type": {"type": "string", "enum": ["", "Directory", "DirectoryOrCreate", "File", "FileOrCreate",
                                                          "Socket", "CharDevice", "BlockDevice"]}}},
}

# values key -> settings field of the same section, where the chart passes the value through unchanged.
SECTIONS: dict[str, tuple[type[BaseModel], list[str], Schema]] = {
    "log": (settings.LogSettings, ["level", "format"], {}),
    "plugin": (settings.PluginSettings, ["enabled", "devicePluginDir", "replicas", "failRequestsGreaterThanOne",
                                         "cdiEnabled", "rescanIntervalSeconds"], {}),
    "exporter": (settings.ExporterSettings, ["enabled", "podResourcesRefreshSeconds", "collectTimeoutSeconds",
                                             "baseUnitMetrics"], {
        "host": {"type": "string", "minLength": 1, "description": "Address the exporter binds to inside the pod."},
        "port": {"$ref": "#/definitions/port"},
        "podResourcesDir": {"$ref": "#/definitions/hostPath"},
        "bindPodIP": {"type": "boolean", "description": "Listen on the pod IP only ($(POD_IP):port)."},
        "webConfig": {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"}, "tls": {"type": "boolean"}, "existingSecret": {"type": "string"},
            "config": {"type": "object", "description": "exporter-toolkit web config"},
            "files": {"$ref": "#/definitions/stringMap"}}},
        "livenessProbe": {"$ref": "#/definitions/probe"},
        "readinessProbe": {"$ref": "#/definitions/probe"},
    }),
    "discovery": (settings.DiscoverySettings, ["enabled", "intervalSeconds"], {
        "featuresDir": {"$ref": "#/definitions/optionalHostPath"},
    }),
    "dra": (settings.DraSettings, ["allocationMode", "registryDir", "pluginsDir", "maxDevicesPerSlice",
                                   "healthTimeoutSeconds", "shareMemoryStepMb", "watchClaims"], {
        "driverName": {"type": "string", "maxLength": 63, "description": "DRA driver name; empty: <vendor>.krakenplug.pcl.ac.cn.",
                       "pattern": f"^({_DNS_SUBDOMAIN})?$"},
        "cdiDir": {"$ref": "#/definitions/hostPath"},
        "deviceClass": {"type": "object", "additionalProperties": False, "properties": {
            "create": {"type": "boolean"}, "extendedResourceName": {"type": "boolean"}}},
        "anyAcceleratorClass": {"type": "boolean"},
    }),
}

# Old per-vendor keys: refused with a message naming the new key (helm prints the const it wanted).
RENAMED = {
    "libraryPath": "options.library_path", "healthPollIntervalSeconds": "options.health_poll_interval_seconds",
    "callTimeoutSeconds": "options.call_timeout_seconds", "healthChecks": "options.health_checks",
    "ignoredXids": "options.ignored_xids", "fatalXids": "options.fatal_xids", "driverMounts": "options.driver_mounts",
    "mountHpeRuntime": "options.mount_hpe_runtime", "maxDevicesPerContainer": "options.max_devices_per_container",
    "smiPath": "options.smi_path", "extraOptions": "options", "driverRoot": "hostMounts.driver-root.hostPath",
    "hpeRoot": "options.hpe_root and libraryDirs", "replicas": "plugin.replicas",
}


def snake(name: str) -> str:
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def model_schema(model: type[BaseModel], definitions: dict[str, Schema]) -> Schema:
    """The model's JSON schema with its sub-models hoisted into ``definitions`` (draft-07 style refs)."""
    schema = model.model_json_schema(ref_template="#/definitions/{model}", mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        definitions[name] = _host_paths(sub)
    hosted: Schema = _host_paths(schema)
    return hosted


def _host_paths(schema: Any) -> Any:
    """Paths in the chart are host or container paths: absolute."""
    if isinstance(schema, dict):
        if schema.get("format") == "path":
            schema = {**schema, "pattern": "^/"}
        return {key: _host_paths(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_host_paths(item) for item in schema]
    return schema


def section(name: str, definitions: dict[str, Schema]) -> Schema:
    model, passed, chart_only = SECTIONS[name]
    fields = model_schema(model, definitions)["properties"]
    properties = {key: fields[snake(key)] for key in passed}
    for value in properties.values():
        value.pop("default", None)  # values.yaml holds the chart's defaults
    return {"type": "object", "additionalProperties": False, "description": f"`{name}` of config.yaml",
            "properties": {**properties, **chart_only}}


def nullable_options(options: Schema) -> Schema:
    """In values a `null` option drops the key (the backend's default applies), e.g. over `defaults.options`."""
    properties = {key: {"anyOf": [{"type": "null"}, value]} for key, value in options.get("properties", {}).items()}
    return {**options, "properties": properties}


def vendor(name: str, options: Schema, extra: Schema) -> Schema:
    """One entry of `vendors` (or `defaults`): chart keys, the backend's options, renamed keys refused."""
    properties: Schema = {
        "enabled": {"type": "boolean"},
        "resourceName": {"$ref": "#/definitions/optionalResourceName"},
        "resourceRules": {"$ref": "#/definitions/resourceRules"},
        "failOnInitError": {"type": "boolean"},
        "privileged": {"type": "boolean"},
        "nodeLabels": {"type": "array", "items": {"$ref": "#/definitions/labelKey"}},
        "nodeSelector": {"$ref": "#/definitions/stringMap"},
        "affinity": {"type": "object"},
        "tolerations": {"type": "array", "items": {"type": "object"}},
        "resources": {"type": "object"},
        "image": {"$ref": "#/definitions/image"},
        "plugin": {"$ref": "#/definitions/plugin"},
        "exporter": {"$ref": "#/definitions/exporter"},
        "discovery": {"$ref": "#/definitions/discovery"},
        "dra": {"$ref": "#/definitions/dra"},
        "log": {"$ref": "#/definitions/log"},
        "extraEnv": {"$ref": "#/definitions/envList"},
        "libraryDirs": {"type": "array", "items": {"$ref": "#/definitions/hostPath"}},
        "hostMounts": {"type": "object", "propertyNames": {"pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                       "additionalProperties": {"$ref": "#/definitions/hostMount"}},
        "options": nullable_options(options),
        **extra,
    }
    for old, new in RENAMED.items():
        properties[old] = {"const": f"{old} was renamed: set {name}.{new}"}
    return {"type": "object", "additionalProperties": False, "properties": properties}


def vendor_extras(model: type[base.BackendOptions], definitions: dict[str, Schema]) -> Schema:
    """Chart keys a backend's options call for: `sriov` for SR-IOV backends, `devices` for a devices file."""
    fields = model.model_fields
    extra: Schema = {}
    if "sriov_config_file" in fields:
        extra["sriov"] = {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"}, "defaultNumVfs": {"type": "integer", "minimum": 0},
            "nodes": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
            "nodeLabel": {"anyOf": [{"type": "null"}, {"$ref": "#/definitions/labelKey"}]}}}
    if "devices_file" in fields:
        devices_file = getattr(sys.modules[model.__module__], "_FakeFile")  # the fake backend's file model
        extra["devices"] = model_schema(devices_file, definitions)["properties"]["devices"]
    return extra


def generate() -> Schema:
    definitions = dict(DEFINITIONS)
    for name in SECTIONS:
        definitions[name] = section(name, definitions)
    definitions["defaults"] = vendor("defaults", model_schema(base.BackendOptions, definitions), {})
    vendors: Schema = {}
    for name in backends.names():
        model = backends.options_class(name)
        definitions[f"vendor-{name}"] = vendor(f"vendors.{name}", model_schema(model, definitions),
                                               vendor_extras(model, definitions))
        vendors[name] = {"$ref": f"#/definitions/vendor-{name}"}
    properties: Schema = {
        "global": {"type": "object", "description": "Values a parent chart shares with its subcharts."},
        "nameOverride": {"type": "string"}, "fullnameOverride": {"type": "string"},
        "namespaceOverride": {"type": "string"}, "commonLabels": {"$ref": "#/definitions/stringMap"},
        "image": {"$ref": "#/definitions/image"},
        "imagePullSecrets": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "serviceAccount": {"type": "object", "additionalProperties": False, "properties": {
            "create": {"type": "boolean"}, "name": {"type": "string"},
            "annotations": {"$ref": "#/definitions/stringMap"}}},
        "rbac": {"type": "object", "additionalProperties": False, "properties": {
            "create": {"type": "boolean"},
            "nodeRestriction": {"type": "object", "additionalProperties": False, "properties": {
                "enabled": {"type": "boolean"},
                "labelPrefixes": {"type": "array", "minItems": 1,
                                  "items": {"type": "string", "pattern": f"^{_DNS_SUBDOMAIN}/$"}}}}}},
        "networkPolicy": {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"},
            "namespaces": {"type": "array", "minItems": 1,
                           "items": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}},
            "namespaceSelector": {"type": "object"},
            "podSelector": {"type": "object"}, "extraFrom": {"type": "array", "items": {"type": "object"}}}},
        **{name: {"$ref": f"#/definitions/{name}"} for name in SECTIONS},
        "vendorLabel": {"$ref": "#/definitions/labelKey"},
        "priorityClassName": {"type": "string"},
        "updateStrategy": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["RollingUpdate", "OnDelete"]}, "rollingUpdate": {"type": "object"}}},
        "revisionHistoryLimit": {"type": "integer", "minimum": 0},
        "tolerations": {"type": "array", "items": {"type": "object"}},
        "podAnnotations": {"$ref": "#/definitions/stringMap"}, "podLabels": {"$ref": "#/definitions/stringMap"},
        "extraEnv": {"$ref": "#/definitions/envList"},
        "extraVolumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "extraVolumeMounts": {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"]}},
        "resources": {"type": "object"},
        "service": {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"}, "annotations": {"$ref": "#/definitions/stringMap"}}},
        "serviceMonitor": {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"}, "additionalLabels": {"$ref": "#/definitions/stringMap"},
            "interval": {"$ref": "#/definitions/duration"}, "scrapeTimeout": {"$ref": "#/definitions/duration"},
            "honorLabels": {"type": "boolean"}, "relabelings": {"type": "array", "items": {"type": "object"}},
            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
            "scheme": {"type": "string", "enum": ["", "http", "https"]},
            "tlsConfig": {"type": "object"}, "basicAuth": {"type": "object"}}},
        "prometheusRule": {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"}, "additionalLabels": {"$ref": "#/definitions/stringMap"},
            "memoryFullRatio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "severity": {"type": "string", "minLength": 1}}},
        "dashboard": {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"}, "namespace": {"type": "string"},
            "labels": {"$ref": "#/definitions/stringMap"}}},
        "tests": {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"}, "image": {"type": "string", "minLength": 1}}},
        "defaults": {"$ref": "#/definitions/defaults"},
        "vendors": {"type": "object", "description": "One DaemonSet per enabled vendor; the keys are backend names.",
                    "additionalProperties": False, "properties": vendors},
    }
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": "krakenplug chart values",
            "description": "Generated by ci/gen-values-schema.py from the agent's settings models; do not edit.",
            "type": "object", "additionalProperties": False, "properties": properties,
            "definitions": dict(sorted(definitions.items()))}


def render() -> str:
    return json.dumps(generate(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the committed schema differs")
    args = parser.parse_args(argv)
    text = render()
    if not args.check:
        SCHEMA_PATH.write_text(text)
        return 0
    committed = SCHEMA_PATH.read_text() if SCHEMA_PATH.exists() else ""
    if committed == text:
        return 0
    diff = difflib.unified_diff(committed.splitlines(), text.splitlines(), "committed", "generated", lineterm="", n=1)
    print("\n".join(list(diff)[:60]), file=sys.stderr)
    print(f"{SCHEMA_PATH.relative_to(ROOT)} is out of date: run python ci/gen-values-schema.py", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

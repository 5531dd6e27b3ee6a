"""Shared constants and helpers of the chart tests (a module of its own so test files can import it)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "charts" / "krakenplug"
VALUES_DIR = REPO_ROOT / "values"
RELEASE = "kp"
NAMESPACE = "krakenplug"
CHART_VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))


def enabled_in(values: dict[str, Any], vendor: str) -> bool:
    """Whether a values file turns ``vendor`` on. helm lays the file over the chart's values.yaml, then
    krakenplug.vendorValues lays ``vendors.<vendor>`` over ``defaults``: a vendor's own ``enabled`` wins."""
    layers = (CHART_VALUES.get("defaults") or {}, values.get("defaults") or {},
              CHART_VALUES["vendors"].get(vendor) or {}, (values.get("vendors") or {}).get(vendor) or {})
    enabled = False
    for layer in layers:
        enabled = bool(layer.get("enabled", enabled))
    return enabled


# The vendor lists come from the chart's values.yaml, so a vendor added there needs no test edit.
ALL_VENDORS: tuple[str, ...] = tuple(CHART_VALUES["vendors"])
# The vendors the chart deploys with its default values (every real vendor; fake is opt-in).
REAL_VENDORS: tuple[str, ...] = tuple(vendor for vendor in ALL_VENDORS if enabled_in({}, vendor))


def only(vendors: Iterable[str], **overrides: Any) -> dict[str, Any]:
    """Values enabling exactly ``vendors``; ``overrides`` are per-vendor value maps merged in."""
    chosen = set(vendors)
    result: dict[str, Any] = {"vendors": {}}
    for vendor in ALL_VENDORS:
        result["vendors"][vendor] = {"enabled": vendor in chosen, **overrides.get(vendor, {})}
    return result


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def by_vendor(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of ``kind`` keyed by their krakenplug.pcl.ac.cn/vendor label."""
    return {obj["metadata"]["labels"]["krakenplug.pcl.ac.cn/vendor"]: obj for obj in of_kind(objects, kind)
            if "krakenplug.pcl.ac.cn/vendor" in obj["metadata"].get("labels", {})}


def container(daemonset: dict[str, Any]) -> dict[str, Any]:
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def config_of(configmap: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(configmap["data"]["config.yaml"])

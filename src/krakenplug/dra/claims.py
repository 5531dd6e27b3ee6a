"""Reading a ResourceClaim: which of our devices it was allocated, with what opaque config. Pure functions.

The kubelet's request carries only the claim's identity; the claim itself comes from the API server.
Everything in it is checked before a device is touched, and every problem becomes a
:class:`ClaimError` naming the claim, the field and the value, which the servicer returns as that
claim's error (the other claims of the batch go on).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from krakenplug import errors
from krakenplug import resource_names as names

CONFIG_API_VERSION = f"{names.DOMAIN}/v1alpha1"
_SHOWN = 80

Json = dict[str, Any]


class ClaimError(errors.KrakenplugError):
    """This claim cannot be prepared; the message names the claim and the reason."""


class DeviceConfig(BaseModel):
    """Opaque per-claim parameters for our driver (``spec.devices.config[].opaque.parameters``)."""

    model_config = ConfigDict(extra="forbid")

    apiVersion: Literal["krakenplug.pcl.ac.cn/v1alpha1"]  # noqa: N815 - the Kubernetes field name
    kind: Literal["DeviceConfig"]
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables, e.g. a visible-devices override.",
    )

    @pydantic.field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or not (key[0].isalpha() or key[0] == "_") or not all(c.isalnum() or c == "_" for c in key) \
                    or not key.isascii():
                raise ValueError(f"{_show(key)} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        return value


MEMORY_LIMIT_ENV = "KRAKENPLUG_MEMORY_LIMIT_MB"
_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_FACTORS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}


def quantity_bytes(text: str) -> int | None:
    """A whole-number Kubernetes quantity in bytes (``20Gi``, ``500M``), None when it is not one."""
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    return int(match.group(1)) * _FACTORS[match.group(2) or ""] if match else None


@dataclasses.dataclass(frozen=True)
class AllocatedDevice:
    request: str
    pool: str
    device: str
    share_id: str | None = None
    memory_mb: int | None = None  # the memory this claim consumes of a shared device


@dataclasses.dataclass(frozen=True)
class ClaimAllocation:
    namespace: str
    name: str
    uid: str
    devices: tuple[AllocatedDevice, ...]
    env: Mapping[str, Mapping[str, str]]  # request -> extra env from opaque config

    def requests(self) -> list[str]:
        return sorted({device.request for device in self.devices})


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + f"... ({len(text)} characters)"


def _mapping(value: Any, where: str, claim: str) -> Json:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ClaimError(f"claim {claim}: {where} must be an object, got {_show(value)}")
    return value


def _string(value: Any, where: str, claim: str) -> str:
    if not isinstance(value, str) or not value:
        raise ClaimError(f"claim {claim}: {where} must be a non-empty string, got {_show(value)}")
    return value


def selects_node(selector: Json, node: str) -> bool:
    """Whether an allocation's nodeSelector allows ``node``; only ``metadata.name`` fields are decided here."""
    terms = selector.get("nodeSelectorTerms")
    if not isinstance(terms, list) or not terms:
        return True
    for term in terms:
        fields = term.get("matchFields") if isinstance(term, dict) else None
        if not fields:
            return True  # label expressions only: the scheduler already decided on labels we cannot see
        if all(isinstance(field, dict) and field.get("key") == "metadata.name" and field.get("operator") == "In"
               and node in (field.get("values") or []) for field in fields):
            return True
    return False


def read_allocation(claim: Any, *, namespace: str, name: str, uid: str, driver: str, node: str) -> ClaimAllocation:
    """Our devices of ``claim`` (the ResourceClaim as JSON); raises ClaimError for anything wrong."""
    who = f"{namespace}/{name}"
    if not isinstance(claim, dict):
        raise ClaimError(f"claim {who}: the API server returned {_show(claim)}, not an object")
    metadata = _mapping(claim.get("metadata"), "metadata", who)
    if metadata.get("uid") != uid:
        raise ClaimError(f"claim {who}: UID mismatch: the kubelet asked for {_show(uid)}, the API server has "
                         f"{_show(metadata.get('uid'))} (the claim was deleted and recreated)")
    status = _mapping(claim.get("status"), "status", who)
    allocation = _mapping(status.get("allocation"), "status.allocation", who)
    if not allocation:
        raise ClaimError(f"claim {who}: not allocated (status.allocation is empty)")
    reserved = status.get("reservedFor")
    if not isinstance(reserved, list) or not reserved:
        raise ClaimError(f"claim {who}: status.reservedFor is empty: no pod uses this claim")
    selector = _mapping(allocation.get("nodeSelector"), "status.allocation.nodeSelector", who)
    if selector and not selects_node(selector, node):
        raise ClaimError(f"claim {who}: allocated for another node (status.allocation.nodeSelector does not "
                         f"select {node})")
    devices = _mapping(allocation.get("devices"), "status.allocation.devices", who)
    results = devices.get("results") or []
    if not isinstance(results, list):
        raise ClaimError(f"claim {who}: status.allocation.devices.results must be a list, got {_show(results)}")
    ours: list[AllocatedDevice] = []
    for position, result in enumerate(results):
        where = f"status.allocation.devices.results[{position}]"
        result = _mapping(result, where, who)
        if result.get("driver") != driver:
            continue
        pool = _string(result.get("pool"), f"{where}.pool", who)
        if pool != node:
            raise ClaimError(f"claim {who}: {where}.pool is {_show(pool)}, but this node's pool is {node!r}")
        share = result.get("shareID")
        ours.append(AllocatedDevice(request=_string(result.get("request"), f"{where}.request", who), pool=pool,
                                    device=_string(result.get("device"), f"{where}.device", who),
                                    share_id=share if isinstance(share, str) and share else None,
                                    memory_mb=_consumed_memory(result.get("consumedCapacity"), where, who)))
    if not ours:
        raise ClaimError(f"claim {who}: no allocation result for driver {driver}")
    return ClaimAllocation(namespace=namespace, name=name, uid=uid, devices=tuple(ours),
                           env=_opaque_env(devices.get("config"), ours, driver=driver, who=who))


def _consumed_memory(consumed: Any, where: str, who: str) -> int | None:
    if consumed is None:
        return None
    consumed = _mapping(consumed, f"{where}.consumedCapacity", who)
    value = consumed.get(f"{names.DOMAIN}/memory")
    if value is None:
        return None
    amount = quantity_bytes(value)
    if amount is None:
        raise ClaimError(f"claim {who}: {where}.consumedCapacity[{names.DOMAIN}/memory] is {_show(value)}, "
                         "not a whole-number quantity")
    return amount // (1 << 20)


def _opaque_env(configs: Any, ours: list[AllocatedDevice], *, driver: str, who: str) -> dict[str, dict[str, str]]:
    """Env per request from our opaque configs, in order (class configs first, then the claim's)."""
    if configs is None:
        return {}
    if not isinstance(configs, list):
        raise ClaimError(f"claim {who}: status.allocation.devices.config must be a list, got {_show(configs)}")
    requests = {device.request for device in ours}
    env: dict[str, dict[str, str]] = {}
    for position, entry in enumerate(configs):
        where = f"status.allocation.devices.config[{position}]"
        entry = _mapping(entry, where, who)
        opaque = _mapping(entry.get("opaque"), f"{where}.opaque", who)
        if opaque.get("driver") != driver:
            continue
        try:
            parsed = DeviceConfig.model_validate(opaque.get("parameters"))
        except pydantic.ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']} "
                                 f"(got {_show(e.get('input'))})" for e in err.errors())
            raise ClaimError(f"claim {who}: {where}.opaque.parameters invalid: {problems}") from err
        wanted = entry.get("requests") or []
        if not isinstance(wanted, list):
            raise ClaimError(f"claim {who}: {where}.requests must be a list, got {_show(wanted)}")
        # A config naming a parent request applies to its firstAvailable sub-requests too.
        targets = [r for r in requests if not wanted or r in wanted or r.split("/")[0] in wanted]
        for request in targets:
            env.setdefault(request, {}).update(parsed.env)
    return env

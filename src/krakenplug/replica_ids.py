"""The one codec for advertised device IDs: time-slicing replicas and the kubelet's 63-character limit.

With ``replicas: N`` above 1, a physical device ``<id>`` is advertised N times as ``<id>::<k>``
(k = 0..N-1); with N = 1 as ``<id>``. The kubelet API documents at most 63 characters for a device ID:
an ID that would exceed that (with its replica suffix) keeps a readable prefix and gets a short hash of
the full physical ID before the suffix (``<prefix>-<sha256[:8]>::<k>``), so a restarted plugin
advertises the same IDs again.

The plugin encodes; the exporter's pod attribution and the SR-IOV component decode what the kubelet's
PodResources API reports back. A hash cannot be reversed, so decoding needs the physical IDs that may be
meant (the current device snapshot): :class:`Decoder` indexes them by their hash.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ["MAX_ID_LENGTH", "SEPARATOR", "Decoder", "fit_id", "physical_id", "replica_ids"]

MAX_ID_LENGTH = 63
SEPARATOR = "::"
_HASH_LENGTH = 8
_HASHED_STEM = re.compile(rf"^.*-(?P<digest>[0-9a-f]{{{_HASH_LENGTH}}})$")
_REPLICA_SUFFIX = re.compile(rf"^(?P<stem>.+)(?P<suffix>{SEPARATOR}\d+)$")


def _digest(device_id: str) -> str:
    return hashlib.sha256(device_id.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LENGTH]


def fit_id(device_id: str, suffix: str = "") -> str:
    """``device_id + suffix``, shortened deterministically when it would exceed 63 characters."""
    if len(device_id) + len(suffix) <= MAX_ID_LENGTH:
        return device_id + suffix
    keep = MAX_ID_LENGTH - len(suffix) - _HASH_LENGTH - 1
    return f"{device_id[:keep]}-{_digest(device_id)}{suffix}"


def replica_ids(device_id: str, replicas: int) -> list[str]:
    """The IDs advertised for one physical device."""
    if replicas == 1:
        return [fit_id(device_id)]
    return [fit_id(device_id, f"{SEPARATOR}{k}") for k in range(replicas)]


class Decoder:
    """Maps advertised IDs back to the physical IDs given at construction (built once per snapshot)."""

    def __init__(self, physical_ids: Iterable[str]) -> None:
        self._known = frozenset(physical_ids)
        self._by_digest: dict[str, list[str]] = {}
        for device_id in self._known:
            self._by_digest.setdefault(_digest(device_id), []).append(device_id)

    def physical_id(self, advertised: str) -> str | None:
        """The physical ID ``advertised`` stands for (itself, a replica's device, a hashed ID), else None."""
        if advertised in self._known:
            return advertised
        replica = _REPLICA_SUFFIX.match(advertised)
        stem, suffix = (replica["stem"], replica["suffix"]) if replica else (advertised, "")
        if suffix and stem in self._known:
            return stem
        hashed = _HASHED_STEM.match(stem)
        if hashed is None:
            return None
        for candidate in self._by_digest.get(hashed["digest"], ()):
            if fit_id(candidate, suffix) == advertised:
                return candidate
        return None


def physical_id(advertised: str, physical_ids: Iterable[str]) -> str | None:
    """One-off :meth:`Decoder.physical_id`; build a :class:`Decoder` to decode many IDs."""
    return Decoder(physical_ids).physical_id(advertised)

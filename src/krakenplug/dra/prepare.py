"""NodePrepareResources / NodeUnprepareResources for one claim: claim -> devices -> CDI spec -> checkpoint.

A prepared claim gets one CDI spec file (``<driver>_claim_<uid>.json``, kind ``<driver>/claim``) with one
CDI device per request of the claim, whose edits come from ``backend.allocate()`` over that request's
devices (so ``*_VISIBLE_DEVICES`` lists them all) plus the opaque config's env. Both calls are
idempotent: a claim already in the checkpoint is answered from it, an unknown one unprepares as done.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from krakenplug import cdi
from krakenplug.backends import base
from krakenplug.dra import claims as claims_mod
from krakenplug.dra.checkpoint import Checkpoint, PreparedClaim, PreparedDevice
from krakenplug.dra.claims import ClaimError
from krakenplug.dra.kube import ApiError

logger = logging.getLogger(__name__)

CDI_CLASS = "claim"


class ClaimReader(Protocol):
    def get_claim(self, namespace: str, name: str) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class ClaimRef:
    namespace: str
    uid: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Preparer:
    """Prepares claims for ``driver`` on ``node``; ``devices()`` maps published device names to the backend
    devices a claim on them gets (one, or all partitions of a whole partitionable device)."""

    def __init__(self, *, api: ClaimReader, backend: base.Backend,
                 devices: Callable[[], Mapping[str, Sequence[base.Device]]],
                 driver: str, node: str, cdi_dir: Path, checkpoint: Checkpoint,
                 cached: Callable[[str, str, str], dict[str, Any] | None] = lambda namespace, name, uid: None) -> None:
        """``cached(namespace, name, uid)``: the claim from a watch cache when it holds that UID, else None."""
        self._api = api
        self._cached = cached
        self._backend = backend
        self._devices = devices
        self._driver = driver
        self._node = node
        self._cdi_dir = Path(cdi_dir)
        self._checkpoint = checkpoint
        self._kind = f"{driver}/{CDI_CLASS}"
        self._lock = threading.Lock()  # one claim written at a time: the checkpoint and spec files stay consistent

    def spec_file(self, uid: str) -> str:
        return f"{cdi.device_name(self._driver)}_{CDI_CLASS}_{cdi.device_name(uid)}.json"

    def prepare(self, ref: ClaimRef) -> PreparedClaim:
        """The claim's devices with CDI IDs; raises ClaimError naming the claim and the reason."""
        for field in ("namespace", "uid", "name"):
            if not getattr(ref, field):
                raise ClaimError(f"claim {ref}: the request's claim {field} is empty")
        known = self._prepared(ref.uid)
        if known is not None:
            return known
        # Read outside the lock: a slow API server delays this claim only, not the other pods' claims.
        allocation = self._allocation(ref)
        with self._lock:
            known = self._prepared(ref.uid)  # a parallel call for the same claim may have been first
            if known is not None:
                return known
            prepared = self._write(allocation)
            self._checkpoint.put(prepared)
            logger.info("prepared claim %s (uid %s): %s", ref, ref.uid,
                        ", ".join(f"{d.device} for {'/'.join(d.request_names)}" for d in prepared.devices))
            return prepared

    def _prepared(self, uid: str) -> PreparedClaim | None:
        known = self._checkpoint.get(uid)
        return known if known is not None and (self._cdi_dir / known.spec_file).exists() else None

    def _allocation(self, ref: ClaimRef) -> claims_mod.ClaimAllocation:
        """The claim's allocation from the watch cache, else (missing there, or refused) from the API server."""
        cached = self._cached(ref.namespace, ref.name, ref.uid)
        if cached is not None:
            try:
                return self._read(cached, ref)
            except ClaimError as err:  # the watch may lag the scheduler's last write: the server decides
                logger.debug("cached %s refused (%s); reading it from the API server", ref, err)
        try:
            claim = self._api.get_claim(ref.namespace, ref.name)
        except ApiError as err:
            raise ClaimError(f"claim {ref}: reading it from the API server failed: {err}") from err
        return self._read(claim, ref)

    def _read(self, claim: Any, ref: ClaimRef) -> claims_mod.ClaimAllocation:
        return claims_mod.read_allocation(claim, namespace=ref.namespace, name=ref.name, uid=ref.uid,
                                          driver=self._driver, node=self._node)

    def _write(self, allocation: claims_mod.ClaimAllocation) -> PreparedClaim:
        current = self._devices()
        who = f"{allocation.namespace}/{allocation.name}"
        by_request: dict[str, list[base.Device]] = {}
        limits: dict[str, list[str]] = {}  # request -> memory share per device, where shared
        for allocated in allocation.devices:
            found = current.get(allocated.device)
            if not found:
                raise ClaimError(f"claim {who}: device {allocated.device!r} (request {allocated.request!r}) is not "
                                 f"a device of driver {self._driver} on this node (any more)")
            for device in found:
                if not device.healthy:
                    logger.warning("claim %s: device %s is %s (%s); preparing it anyway, the claim tolerates the "
                                   "taint", who, device.id, device.health.value, device.health_reason or "no reason")
            by_request.setdefault(allocated.request, []).extend(found)
            if allocated.memory_mb is not None:
                limits.setdefault(allocated.request, []).append(str(allocated.memory_mb))
        edits: dict[str, dict[str, Any]] = {}
        names: dict[str, str] = {}
        for request, devices in by_request.items():
            try:
                allocation_edits = self._backend.allocate(devices)
            except Exception as err:  # noqa: BLE001 - a vendor failure is this claim's error, not the batch's
                raise ClaimError(f"claim {who}: the backend could not allocate {[d.id for d in devices]} for "
                                 f"request {request!r}: {err}") from err
            extra = dict(allocation.env.get(request) or {})
            if request in limits:  # advisory: no backend can make the vendor enforce it (docs/dra.md)
                extra.setdefault(claims_mod.MEMORY_LIMIT_ENV, ",".join(limits[request]))
            merged = dataclasses.replace(allocation_edits, envs={**allocation_edits.envs, **extra})
            names[request] = cdi.device_name(f"{allocation.uid}-{request.replace('/', '-')}")
            edits[names[request]] = cdi.container_edits(merged)
        filename = self.spec_file(allocation.uid)
        cdi.write_json(self._cdi_dir, filename, cdi.spec(self._kind, edits))
        prepared = tuple(PreparedDevice(request_names=(d.request,), pool=d.pool, device=d.device,
                                        cdi_ids=(cdi.qualified(self._kind, names[d.request]),), share_id=d.share_id)
                         for d in allocation.devices)
        return PreparedClaim(uid=allocation.uid, namespace=allocation.namespace, name=allocation.name,
                             spec_file=filename, devices=prepared)

    def unprepare(self, ref: ClaimRef) -> None:
        """Removes the claim's spec and checkpoint entry; a claim we never prepared is already unprepared."""
        with self._lock:
            known = self._checkpoint.get(ref.uid)
            filename = known.spec_file if known else self.spec_file(ref.uid)
            try:
                cdi.remove_spec(self._cdi_dir, filename)
            except OSError as err:
                raise ClaimError(f"claim {ref}: removing CDI spec {self._cdi_dir / filename} failed: {err}") from err
            self._checkpoint.drop(ref.uid)
            if known:
                logger.info("unprepared claim %s (uid %s)", ref, ref.uid)

    def sweep(self) -> int:
        """Removes our claim specs that no checkpointed claim owns (left by a crash mid-prepare)."""
        owned = {claim.spec_file for claim in self._checkpoint.all()}
        removed = 0
        for path in self._cdi_dir.glob(f"{cdi.device_name(self._driver)}_{CDI_CLASS}_*.json"):
            if path.name not in owned:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

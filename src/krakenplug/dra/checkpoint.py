"""The prepared claims, on disk, so that an agent restarted between Prepare and Unprepare still unprepares.

One JSON file under the plugin's data dir, rewritten atomically after every change. A file that cannot
be read is moved aside (and logged) rather than stopping the driver: the kubelet retries Prepare, and
specs of claims we no longer know are swept at start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from krakenplug import cdi

logger = logging.getLogger(__name__)

VERSION = 1


@dataclasses.dataclass(frozen=True)
class PreparedDevice:
    request_names: tuple[str, ...]
    pool: str
    device: str
    cdi_ids: tuple[str, ...]
    share_id: str | None = None


@dataclasses.dataclass(frozen=True)
class PreparedClaim:
    uid: str
    namespace: str
    name: str
    spec_file: str
    devices: tuple[PreparedDevice, ...]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreparedClaim:
        devices = tuple(PreparedDevice(request_names=tuple(d["request_names"]), pool=d["pool"], device=d["device"],
                                       cdi_ids=tuple(d["cdi_ids"]), share_id=d.get("share_id"))
                        for d in data["devices"])
        return cls(uid=data["uid"], namespace=data["namespace"], name=data["name"], spec_file=data["spec_file"],
                   devices=devices)


class Checkpoint:
    """Prepared claims by UID; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._claims: dict[str, PreparedClaim] = self._load()

    def _load(self) -> dict[str, PreparedClaim]:
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            return {uid: PreparedClaim.from_json(claim) for uid, claim in data["claims"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            aside = self.path.with_name(self.path.name + ".corrupt")
            logger.error("DRA checkpoint %s is unreadable (%s); moved to %s, starting empty", self.path, err, aside)
            os.replace(self.path, aside)
            return {}

    def get(self, uid: str) -> PreparedClaim | None:
        with self._lock:
            return self._claims.get(uid)

    def all(self) -> list[PreparedClaim]:
        with self._lock:
            return list(self._claims.values())

    def put(self, claim: PreparedClaim) -> None:
        with self._lock:
            self._claims[claim.uid] = claim
            self._save()

    def drop(self, uid: str) -> None:
        with self._lock:
            if self._claims.pop(uid, None) is not None:
                self._save()

    def _save(self) -> None:
        cdi.write_json(self.path.parent, self.path.name,
                       {"version": VERSION, "claims": {uid: c.to_json() for uid, c in self._claims.items()}})

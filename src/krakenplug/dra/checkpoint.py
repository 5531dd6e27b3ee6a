"""The prepared claims, on disk, so that an agent restarted between Prepare and Unprepare still unprepares.

A journal under the plugin's data dir: a header line, then one JSON line per change (``{"put": claim}``,
``{"drop": uid}``), each appended with a single write, so a Prepare costs no rename (bench/dra_prepare.py).
At start, and when the journal has grown to several times the live claims, it is compacted: rewritten
atomically with one ``put`` per claim. A last line cut short by a crash is ignored (its Prepare had not
answered, so the kubelet retries). A file that cannot be read is moved aside (and logged) rather than
stopping the driver: the kubelet retries Prepare, and specs of claims we no longer know are swept at
start. The version-1 format (one JSON object) is still read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

VERSION = 2
_COMPACT_SLACK = 64  # journal lines beyond twice the live claims before a compaction


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
        # By hand: dataclasses.asdict deep-copies every string, a tenth of a Prepare (bench/dra_prepare.py).
        return {"uid": self.uid, "namespace": self.namespace, "name": self.name, "spec_file": self.spec_file,
                "devices": [{"request_names": list(d.request_names), "pool": d.pool, "device": d.device,
                             "cdi_ids": list(d.cdi_ids), "share_id": d.share_id} for d in self.devices]}

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
        self._lines = 0
        self._handle = -1
        self._compact()

    def _load(self) -> dict[str, PreparedClaim]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as err:
            return self._aside(err)
        try:
            return _replay(text)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return self._aside(err)

    def _aside(self, err: Exception) -> dict[str, PreparedClaim]:
        aside = self.path.with_name(self.path.name + ".corrupt")
        logger.error("DRA checkpoint %s is unreadable (%s); moved to %s, starting empty", self.path, err, aside)
        with contextlib.suppress(OSError):
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
            self._append({"put": claim.to_json()}, compact=False)  # Prepare's path: compaction waits for a drop

    def drop(self, uid: str) -> None:
        with self._lock:
            if self._claims.pop(uid, None) is not None:
                self._append({"drop": uid}, compact=True)

    def close(self) -> None:
        with self._lock:
            if self._handle >= 0:
                os.close(self._handle)
                self._handle = -1

    def _append(self, entry: dict[str, Any], *, compact: bool) -> None:
        """Appends ``entry``; with ``compact``, rewrites the journal instead once it outgrew the live claims
        (puts only add live claims, so drops alone bound its length)."""
        if self._handle < 0 or (compact and self._lines > 2 * len(self._claims) + _COMPACT_SLACK):
            self._compact()
            return
        data = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        written = os.write(self._handle, data)  # O_APPEND: one write, one line
        if written != len(data):  # a full disk; the journal must not keep half a line
            self._compact()
            return
        self._lines += 1

    def _compact(self) -> None:
        """Rewrites the journal with the live claims, atomically, and reopens it for appending."""
        if self._handle >= 0:
            os.close(self._handle)
            self._handle = -1
        lines = [json.dumps({"version": VERSION}), *(json.dumps({"put": claim.to_json()}, sort_keys=True)
                                                     for claim in self._claims.values())]
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text("\n".join(lines) + "\n")
        os.replace(temporary, self.path)
        self._handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._lines = len(lines)


def _replay(text: str) -> dict[str, PreparedClaim]:
    """The claims a journal (or a version-1 file) says are prepared; raises ValueError and friends."""
    stripped = text.strip()
    if not stripped:
        return {}
    try:
        whole = json.loads(stripped)
    except ValueError:  # a journal of several lines is no one JSON document
        whole = None
    if isinstance(whole, dict) and "claims" in whole:  # version 1
        if whole.get("version") != 1:
            raise ValueError(f"version {whole.get('version')!r}, expected 1 or {VERSION}")
        return {uid: PreparedClaim.from_json(claim) for uid, claim in whole["claims"].items()}
    lines = text.split("\n")
    header = json.loads(lines[0])
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise ValueError(f"header {lines[0][:80]!r}, expected version {VERSION}")
    claims: dict[str, PreparedClaim] = {}
    complete = text.endswith("\n")
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            if number == len(lines) and not complete:
                logger.warning("DRA checkpoint: ignoring a last line cut short (an agent crash mid-write)")
                break
            raise
        if "put" in entry:
            claim = PreparedClaim.from_json(entry["put"])
            claims[claim.uid] = claim
        else:
            claims.pop(str(entry["drop"]), None)
    return claims

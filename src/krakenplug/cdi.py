"""CDI (Container Device Interface) spec files: what a CDI-enabled runtime reads from /var/run/cdi.

Shared by the DRA driver (one spec per prepared claim) and the device plugin's ``cdi_enabled`` mode
(one spec per vendor with a CDI device per physical device, kept current). The vendors other than
NVIDIA ship no CDI generator, so without these files the CDI names we hand out could not be resolved.
Edits come from the backend's ``allocate()``, the same device nodes, env and mounts the device plugin
returns. Files are written atomically (temporary file, rename) so a runtime never reads half. There is no
fsync (it cost 5 ms a file, bench/dra_prepare.py): the rename survives a crash of the agent, and only a
power loss could lose a file, after which the node reboots, /var/run/cdi (tmpfs) is empty anyway and the
kubelet prepares every claim again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from krakenplug.backends import base

__all__ = ["CDI_VERSION", "DeviceSpecs", "container_edits", "device_name", "qualified", "remove_spec",
           "spec", "write_json"]

logger = logging.getLogger(__name__)

# The oldest spec with every field we write (deviceNodes[].hostPath came in 0.5.0; our kinds have no dot in
# the class, which needs 0.6.0): containerd 1.7, whose CDI library stops at 0.5.x, reads it too.
CDI_VERSION = "0.5.0"
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.:-]+")

Json = dict[str, Any]


def device_name(text: str) -> str:
    """A CDI device name (letters, digits, ``_ . : -``, starting with a letter or digit) for ``text``."""
    name = _NAME_CHARACTERS.sub("-", text).lstrip("_.:-")
    return name or "device"


def qualified(kind: str, name: str) -> str:
    """The fully qualified CDI device ID the runtime resolves: ``vendor/class=name``."""
    return f"{kind}={name}"


def container_edits(allocation: base.ContainerAllocation, *, env: bool = True) -> Json:
    """``containerEdits`` for an allocation; ``env=False`` leaves the variables to the caller."""
    edits: Json = {}
    if env and allocation.envs:
        edits["env"] = [f"{key}={value}" for key, value in sorted(allocation.envs.items())]
    if allocation.device_nodes:
        edits["deviceNodes"] = [{"path": node.container_path, "hostPath": node.host_path,
                                 "permissions": node.permissions} for node in allocation.device_nodes]
    if allocation.mounts:
        edits["mounts"] = [{"hostPath": mount.host_path, "containerPath": mount.container_path,
                            "options": ["ro", "nosuid", "nodev", "bind"] if mount.read_only
                            else ["rw", "nosuid", "nodev", "bind"]} for mount in allocation.mounts]
    return edits


def spec(kind: str, devices: Mapping[str, Json]) -> Json:
    """A CDI spec of ``kind`` with one device per (name, containerEdits) pair."""
    return {"cdiVersion": CDI_VERSION, "kind": kind,
            "devices": [{"name": name, "containerEdits": edits} for name, edits in devices.items()]}


def _umask() -> int | None:
    """The process umask from /proc (reading it with os.umask would change it, racing other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


_MODE = 0o644  # runtimes run as root, but tools that list specs may not
_CHMOD = _umask() is None or (_MODE & ~(_umask() or 0)) != _MODE  # only where the umask would narrow the mode


def write_json(directory: Path, filename: str, content: Json) -> Path:
    """Writes ``content`` as JSON to ``directory/filename`` atomically (specs, checkpoints); returns the path.

    On the Prepare path, so it makes few system calls: open a fixed temporary name (callers serialise
    writes of one file), one write, close, rename; the directory is made only when the open finds it
    missing. Compact JSON, because ``indent`` makes the json module use its pure-Python encoder. (Empty
    files made ahead by a thread of their own saved the file creation in a microbenchmark but made
    NodePrepareResources 0.13-0.2 ms slower in the running agent, bench/dra_prepare.py: gone.)
    """
    target = directory / filename
    data = json.dumps(content, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    temporary = directory / f".{filename}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        handle = os.open(temporary, flags, _MODE)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        handle = os.open(temporary, flags, _MODE)
    try:
        try:
            if _CHMOD:
                os.fchmod(handle, _MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view):]
        finally:
            os.close(handle)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return target


def remove_spec(directory: Path, filename: str) -> bool:
    """Removes a spec; False when it was already gone."""
    try:
        (directory / filename).unlink()
    except FileNotFoundError:
        return False
    return True


class DeviceSpecs:
    """The device plugin's specs: per vendor, kind ``<prefix>/<vendor>`` with one CDI device per physical
    device (named by its ID, as the plugin's Allocate names them), rewritten when the devices change.

    Env vars stay out of these per-device edits: several devices of one container would overwrite each
    other's ``*_VISIBLE_DEVICES``; the device plugin's Allocate response carries the env itself. A spec
    that cannot be written is logged once and retried on the next update; the plugin keeps serving.
    """

    def __init__(self, directory: Path, prefix: str, backend: base.Backend) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self._backend = backend
        self._written: dict[str, Json] = {}  # file name -> content
        self._failing = False
        self._refused: set[str] = set()  # devices whose allocate() failed, logged once each

    def kind(self, device: base.Device) -> str:
        return f"{self.prefix}/{device.vendor}"

    def cdi_id(self, device: base.Device) -> str:
        return qualified(self.kind(device), device_name(device.id))

    def filename(self, kind: str) -> str:
        return device_name(kind.replace("/", "_")) + ".json"

    def update(self, devices: Sequence[base.Device]) -> bool:
        """Rewrites the specs whose content changed; True when any was written."""
        by_kind: dict[str, dict[str, Json]] = {}
        for device in devices:
            try:
                edits = container_edits(self._backend.allocate([device]), env=False)
            except Exception as err:  # noqa: BLE001 - vendor boundary: one device's spec, not the plugin
                if device.id not in self._refused:
                    logger.warning("no CDI spec entry for device %s: the backend could not allocate it: %s",
                                   device.id, err)
                self._refused.add(device.id)
                continue
            self._refused.discard(device.id)
            by_kind.setdefault(self.kind(device), {})[device_name(device.id)] = edits
        wrote = False
        try:
            for kind, entries in sorted(by_kind.items()):
                filename, wanted = self.filename(kind), spec(kind, entries)
                if self._written.get(filename) == wanted and (self.directory / filename).exists():
                    continue
                write_json(self.directory, filename, wanted)
                self._written[filename] = wanted
                wrote = True
                logger.info("wrote CDI spec %s with %d device(s)", self.directory / filename, len(entries))
            for filename in sorted(set(self._written) - {self.filename(kind) for kind in by_kind}):
                remove_spec(self.directory, filename)  # the vendor's last device is gone
                del self._written[filename]
                wrote = True
        except OSError as err:
            if not self._failing:
                logger.warning("writing CDI specs to %s failed (%s); CDI names of the device plugin cannot be "
                               "resolved until it works", self.directory, err)
            self._failing = True
            return wrote
        if self._failing:
            logger.info("writing CDI specs to %s works again", self.directory)
        self._failing = False
        return wrote

    def remove(self) -> None:
        for filename in list(self._written):
            remove_spec(self.directory, filename)
        self._written.clear()

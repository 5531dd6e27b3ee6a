"""The fake backend: devices described in a YAML file that is watched while the agent runs.

It serves the demo, the e2e tests and clusters without accelerators (kind). Editing the file is the
fault-injection interface: change ``health``, ``utilization`` or ``memory_used_mb``, add or remove
devices, or set ``faults`` to make samples fail or hang. A malformed edit is reported with the line and
field, and the last good state is kept. The file is watched with inotify (a stat poll every
``watch_interval_seconds`` where that is unavailable): a file renamed into place, or a ConfigMap
update, is read at once; an in-place write once the file was closed and quiet for ``settle_seconds``.

File format::

    devices:
      - id: fake-0            # stable ID advertised to the kubelet
        model: KrakenSim-80G
        memory_mb: 81920
        numa_node: 0          # or null
        health: Healthy       # or Unhealthy
        health_reason: ""     # optional, shown in logs
        utilization: 37.5     # percent
        memory_used_mb: 20480
        pci_bus_id: "0000:3b:00.0"   # optional
    faults:                   # optional
      sample_error: "ECC storm"      # every sample raises DeviceQueryError with this text
      sample_delay_seconds: 10       # every sample sleeps this long first (exercise timeouts)
      allocate_error: "no such device node"   # allocate() raises DeviceQueryError naming the devices
      allocate_delay_seconds: 30     # allocate() sleeps this long first (a hung vendor call)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import ClassVar, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from krakenplug import errors, fswatch
from krakenplug.backends import base

logger = logging.getLogger(__name__)

DEFAULT_RESOURCE = "krakenplug.pcl.ac.cn/fake"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CONFIGMAP_DATA = "..data"
_SHOWN_CHARACTERS = 120


class NotADevicesFile(errors.ConfigError):
    """The devices file is not text at all (a binary file): named by mistake rather than mis-edited."""


class FakeOptions(base.BackendOptions):
    devices_file: Path | None = Field(None, description="YAML device file; None uses the embedded default.")
    watch_interval_seconds: float = Field(
        1.0, gt=0, description="Where inotify is unavailable: how often the file is checked for edits.",
    )
    settle_seconds: float = Field(
        0.05, ge=0, description="An in-place (non-atomic) write is read once the file was quiet this long.",
    )
    max_file_bytes: int = Field(1_048_576, ge=1, description="A larger devices file is refused, not read.")
    device_node_host_path: str = Field(
        "/dev/null", description="Host device handed to containers as /dev/krakenplug-fake<index>.",
    )


class _FakeDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: str = Field(min_length=1)
    memory_mb: int = Field(ge=0)
    numa_node: int | None = Field(None, ge=0)
    health: Literal["Healthy", "Unhealthy"] = "Healthy"
    health_reason: str = ""
    utilization: float = Field(0.0, ge=0, le=100)
    memory_used_mb: float = Field(0.0, ge=0)
    pci_bus_id: str | None = None


class _Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_error: str | None = None
    sample_delay_seconds: float = Field(0.0, ge=0)
    allocate_error: str | None = None
    allocate_delay_seconds: float = Field(0.0, ge=0)


class _FakeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[_FakeDevice]
    faults: _Faults = _Faults()


@dataclasses.dataclass(frozen=True)
class _State:
    devices: tuple[base.Device, ...]
    samples: dict[str, base.DeviceSample]
    faults: _Faults


class FakeBackend:
    """Devices from a file; thread-safe.

    While ``watch_health`` runs, it alone reads the file (woken by inotify, or by a slow stat poll where
    inotify is unavailable) and ``devices()`` / ``sample()`` only return the state it last loaded. Without
    a watcher (a one-shot ``krakenplug devices``, a test) they re-read the file when its stat changed.
    A file is parsed outside the lock that guards the state, so readers never wait for a parse.
    """

    name: ClassVar[str] = "fake"
    Options: ClassVar[type[FakeOptions]] = FakeOptions

    def __init__(self, options: FakeOptions, *, node_name: str = "") -> None:
        self._options = options
        self._state_lock = threading.Lock()  # held only to swap or read ``_state``
        self._load_lock = threading.Lock()  # one reader of the file at a time
        self._state: _State | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._watching = False
        self._opened = False
        self.last_error: str | None = None

    @property
    def source(self) -> str:
        return str(self._options.devices_file) if self._options.devices_file else "<embedded default>"

    def open(self) -> None:
        first, self._opened = not self._opened, True
        try:
            self._reload(force=True)
        except NotADevicesFile as err:
            if first:  # the file named at start is binary: a wrong path, not an edit to wait out (exit 2)
                raise
            raise errors.BackendUnavailable(str(err)) from err
        except errors.ConfigError as err:
            raise errors.BackendUnavailable(str(err)) from err

    def close(self) -> None:
        pass

    def devices(self) -> Sequence[base.Device]:
        return self._current().devices

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        ids = ",".join(device.id for device in devices)
        faults = self._faults()
        if faults.allocate_delay_seconds:
            time.sleep(faults.allocate_delay_seconds)
        error = faults.allocate_error
        if error:
            raise errors.DeviceQueryError(f"fake devices {ids}: {error}")
        indexes = ",".join(str(device.index) for device in devices)
        return base.ContainerAllocation(
            envs={"KRAKENPLUG_VISIBLE_DEVICES": ids, "FAKE_VISIBLE_DEVICES": indexes},
            device_nodes=tuple(node for device in devices for node in device.device_nodes),
            annotations={"krakenplug.pcl.ac.cn/fake-devices": ids},
        )

    def sample(self, device: base.Device) -> base.DeviceSample:
        state = self._current()
        if state.faults.sample_delay_seconds:
            time.sleep(state.faults.sample_delay_seconds)
        if state.faults.sample_error:
            raise errors.DeviceQueryError(f"fake device {device.id}: {state.faults.sample_error}")
        try:
            return state.samples[device.id]
        except KeyError:
            raise errors.DeviceQueryError(f"fake device {device.id} is gone") from None

    def watch_health(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        """Reports every change of the file's devices until ``stop``; survives any content of the file."""
        path = self._options.devices_file
        if path is None:  # the embedded default never changes
            stop.wait()
            return
        # In a ConfigMap volume the file is a symlink into ``..data``, which the kubelet replaces by renaming.
        watch = fswatch.DirectoryWatch(path.parent, names=(path.name, _CONFIGMAP_DATA),
                                       poll_seconds=self._options.watch_interval_seconds)
        waker = threading.Thread(target=_close_on_stop, args=(stop, watch), name="fake-watch-stop", daemon=True)
        waker.start()
        self._watching = True
        try:
            self._follow(watch, path.name, stop, changed)
        finally:
            self._watching = False
            watch.release()  # the waker's later close() is then a no-op; it ends with stop

    def driver_version(self) -> str | None:
        return "fake-1.0"

    def library_info(self) -> base.LibraryInfo:
        path = str(self._options.devices_file) if self._options.devices_file else "embedded"
        return base.LibraryInfo(library="fake devices file", api="krakenplug fake v1", path=path)

    # -- internals -------------------------------------------------------------------------------

    def _follow(self, watch: fswatch.DirectoryWatch, name: str, stop: threading.Event,
                changed: Callable[[], None]) -> None:
        if self._reload_quietly():  # an edit between open() and now
            changed()
        settle_at: float | None = None  # an in-place write is read once the file was quiet this long
        while not stop.is_set():
            timeout = None if settle_at is None else max(0.0, settle_at - time.monotonic())
            changes = watch.wait(timeout)
            change = changes.get(name) or (fswatch.Change.MOVED_IN if _CONFIGMAP_DATA in changes else None)
            if stop.is_set():
                return
            if change is fswatch.Change.MOVED_IN:  # renamed into place: complete, read it now
                settle_at = None
            elif change in (fswatch.Change.CREATED, fswatch.Change.WRITTEN):
                settle_at = time.monotonic() + self._options.settle_seconds
                continue
            elif change is fswatch.Change.REMOVED or settle_at is None or time.monotonic() < settle_at:
                continue  # a removed file keeps the last good state until a new one appears
            settle_at = None
            if self._reload_quietly():
                changed()

    def _reload_quietly(self) -> bool:
        """Reads the file if its stat changed; True when the devices differ. A bad file is logged, not raised."""
        try:
            return self._reload()
        except errors.ConfigError:
            return False

    def _faults(self) -> _Faults:
        """The faults of the last load; none before one (allocate needs only the devices it is given)."""
        try:
            return self._current().faults
        except errors.BackendUnavailable:
            return _Faults()

    def _current(self) -> _State:
        if not self._watching and self._options.devices_file is not None:
            self._reload_quietly()
        with self._state_lock:
            state = self._state
        if state is None:
            raise errors.BackendUnavailable(f"fake devices file {self.source} was never loaded")
        return state

    def _reload(self, *, force: bool = False) -> bool:
        with self._load_lock:
            stamp = self._file_stamp()
            if not force and stamp == self._stamp:
                return False
            self._stamp = stamp  # a broken file is reported once, not re-read until it changes
            try:
                state = self._load()
            except errors.ConfigError as err:
                if str(err) != self.last_error and not force:
                    logger.error("%s; keeping the last good device list", err)
                self.last_error = str(err)
                raise
            self.last_error = None
            with self._state_lock:
                previous, self._state = self._state, state
            return previous is None or previous.devices != state.devices

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self._options.devices_file is None:
            return None
        try:
            st = os.stat(self._options.devices_file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_text(self) -> str:
        if self._options.devices_file is None:
            return resources.files("krakenplug").joinpath("data/fake-devices.yaml").read_text()
        limit = self._options.max_file_bytes
        try:
            with open(self._options.devices_file, "rb") as file:
                data = file.read(limit + 1)
        except OSError as err:
            raise errors.ConfigError(f"fake devices file {self.source}: cannot read: {err.strerror}") from err
        if len(data) > limit:
            raise errors.ConfigError(f"fake devices file {self.source}: larger than {limit} bytes "
                                     f"(backends.fake.max_file_bytes); not read")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise NotADevicesFile(f"fake devices file {self.source}: not UTF-8 text (byte {err.start}: "
                                  f"{data[err.start:err.start + 1]!r})") from None
        if "\0" in text:
            raise NotADevicesFile(f"fake devices file {self.source}: not a text file (NUL at byte {data.index(0)})")
        return text

    def _load(self) -> _State:
        parsed = parse_devices_file(self._read_text(), source=self.source)
        devices, samples = [], {}
        for index, spec in enumerate(parsed.devices):
            device = base.Device(
                id=spec.id, index=index, vendor="fake", model=spec.model, memory_total_mb=spec.memory_mb,
                resource=self._options.resource_for(spec.model, DEFAULT_RESOURCE), numa_node=spec.numa_node,
                health=base.Health(spec.health), health_reason=spec.health_reason, pci_bus_id=spec.pci_bus_id,
                uuid=spec.id, device_nodes=(base.DeviceNode(self._options.device_node_host_path,
                                                            f"/dev/krakenplug-fake{index}"),),
            )
            devices.append(device)
            samples[spec.id] = base.DeviceSample(
                utilization_percent=spec.utilization, memory_used_mb=spec.memory_used_mb,
                memory_total_mb=float(spec.memory_mb),
            )
        return _State(tuple(devices), samples, parsed.faults)


def _close_on_stop(stop: threading.Event, watch: fswatch.DirectoryWatch) -> None:
    stop.wait()
    watch.close()


def parse_devices_file(text: str, *, source: str) -> _FakeFile:
    """Validates a devices file; errors name the line and the field (``devices[1].memory_mb``)."""
    try:
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (libyaml's when present)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise errors.ConfigError(f"fake devices file {source}{where}: invalid YAML: "
                                 f"{getattr(err, 'problem', None) or err}") from err
    except RecursionError:
        raise errors.ConfigError(f"fake devices file {source}: nested too deeply to be a devices file") from None
    if not isinstance(data, dict):
        raise errors.ConfigError(f"fake devices file {source}: expected a mapping with a 'devices' list")
    try:
        parsed = _FakeFile.model_validate(data)
    except pydantic.ValidationError as err:
        # An unknown key first: `device:` for `devices:` is a typo, and "devices: Field required" hides it.
        problems = err.errors()
        problem = next((p for p in problems if p["type"] == "extra_forbidden"), problems[0])
        message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
        raise errors.ConfigError(f"fake devices file {source}{_line_of(_compose(text), problem['loc'])}: "
                                 f"{_dotted(problem['loc'])}: {message} (got {_cut(problem.get('input'))})"
                                 ) from err
    node: yaml.Node | None = None
    seen: set[str] = set()
    for position, spec in enumerate(parsed.devices):
        if spec.id in seen:
            node = node or _compose(text)
            raise errors.ConfigError(f"fake devices file {source}{_line_of(node, ('devices', position, 'id'))}: "
                                     f"devices[{position}].id: duplicate device id {spec.id!r}")
        seen.add(spec.id)
    return parsed


def _compose(text: str) -> yaml.Node | None:
    """The node tree, only to name the line of a validation error (the data itself was parsed already)."""
    try:
        return yaml.compose(text, Loader=_LOADER)  # noqa: S506 - composing builds no objects
    except (yaml.YAMLError, RecursionError):
        return None


def _cut(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARACTERS else f"{text[:_SHOWN_CHARACTERS]}... ({len(text)} characters)"


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> str:
    """The 1-based line of the deepest YAML node on ``loc``, as ' line N'."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == part), None)
            if node is None:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return f" line {line}" if line else ""

"""Test helpers for the vendor backends: the fake vendor libraries, their fixture files and fake host trees.

* ``NVML``, ``DCMI``, ``CNDEV``, ``XPUML``, ``STCML``: the fake libraries (fakelibs/fake_*.c). ``build``
  compiles one (``omit`` leaves exported functions out); ``fixture`` writes its fixture file and points the
  library at it through its environment variable.
* ``Fixture``: the "key=value" file a fake library re-reads on every call (format: fakelibs/fixture.h);
  every change rewrites it atomically, so a call never sees half a file. ``fixture_values`` builds one from
  per-device fields.
* ``FakeHost``, ``make_dev_tree``, ``make_pci_device``: fake /dev and /sys trees.
* ``FakeKernel``: the sysfs writer the SR-IOV code is given in tests. It enforces the kernel's rules for
  ``sriov_numvfs`` on the fake tree (ERANGE above ``sriov_totalvfs``, EBUSY for N -> M without 0, EINVAL
  for junk) and creates or removes the VF directories and ``virtfn<i>``/``physfn`` links, like
  drivers/pci/iov.c does on a real one.
The Kubernetes API and PodResources stand-ins are in fakecluster.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.util
import os
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from krakenplug import backends, errors, settings
from krakenplug.backends import base, fallback

FAKELIBS = Path(__file__).parent / "fakelibs"
FAKE_STC_SMI = FAKELIBS / "fake-stc-smi"
DEVICE_KEY = re.compile(r"dev\d+\.")


def compile_fake_library(source: str, soname: str, out_dir: Path, *, defines: Sequence[str] = ()) -> Path:
    """The shared builder from this directory's conftest.py, loaded by path (``import conftest`` is ambiguous)."""
    spec = importlib.util.spec_from_file_location("_backends_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compile_fake_library(source, soname, out_dir, defines=defines)


class Fixture:
    """The fixture file of one fake library; ``update`` and ``remove`` change some keys and rewrite it."""

    def __init__(self, path: Path, values: Mapping[str, Any] | None = None) -> None:
        self.path = path
        self.values: dict[str, Any] = {}
        self.write(values or {})

    def write(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        self._flush()

    def update(self, changes: Mapping[str, Any]) -> None:
        self.values.update(changes)
        self._flush()

    def remove(self, *keys: str) -> None:
        for key in keys:
            self.values.pop(key, None)
        self._flush()

    def replace_devices(self, devices: Sequence[Mapping[str, Any]]) -> None:
        """Lists ``devices`` instead of the current ones; keys that are about no single device stay."""
        kept = {key: value for key, value in self.values.items() if not DEVICE_KEY.match(key)}
        self.write({**kept, **fixture_values(devices)})

    def _flush(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("".join(f"{key}={value}\n" for key, value in self.values.items()))
        os.replace(temporary, self.path)


def fixture_values(devices: Sequence[Mapping[str, Any]], **settings: Any) -> dict[str, Any]:
    """Fixture keys listing ``devices`` (the fields of device 0, 1, ...) plus the library-wide ``settings``."""
    values: dict[str, Any] = {"count": len(devices), **settings}
    for index, fields in enumerate(devices):
        values.update({f"dev{index}.{field}": value for field, value in fields.items()})
    return values


@dataclasses.dataclass(frozen=True)
class FakeLibrary:
    """One fake vendor library: its source in fakelibs/, the name it is loaded by, and the variable naming
    its fixture file."""

    source: str
    soname: str
    fixture_env: str

    def build(self, out_dir: Path, *, omit: Iterable[str] = (), defines: Sequence[str] = ()) -> Path:
        """Compiles the library into ``out_dir``; ``omit`` names exported functions to leave out."""
        return compile_fake_library(self.source, self.soname, out_dir,
                                    defines=[*(f"OMIT_{name}" for name in omit), *defines])

    def fixture(self, path: Path, values: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> Fixture:
        """Writes the fixture file and points the library (in this process and in children) at it."""
        monkeypatch.setenv(self.fixture_env, str(path))
        return Fixture(path, values)


NVML = FakeLibrary("fake_nvml.c", "libnvidia-ml.so.1", "FAKE_NVML_FIXTURE")
DCMI = FakeLibrary("fake_dcmi.c", "libdcmi.so", "FAKE_DCMI_FIXTURE")
CNDEV = FakeLibrary("fake_cndev.c", "libcndev.so", "FAKE_CNDEV_FIXTURE")
XPUML = FakeLibrary("fake_xpuml.c", "libxpuml.so.1", "FAKE_XPUML_FIXTURE")
STCML = FakeLibrary("fake_stcml.c", "libstcml.so", "FAKE_STCML_FIXTURE")


# -- fake host trees -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FakeHost:
    """A test's fake /dev and /sys; ``options`` are the backend options that point at them."""

    dev: Path
    sysfs: Path

    @property
    def options(self) -> dict[str, str]:
        return {"dev_root": str(self.dev), "sysfs_root": str(self.sysfs)}

    def node_paths(self, *names: str) -> list[tuple[str, str]]:
        """(host path, container path) of the device nodes ``names``, as an allocation hands them out."""
        return [(str(self.dev / name), f"/dev/{name}") for name in names]


def fake_host(root: Path, dev_nodes: Iterable[str], numa_by_bus_id: Mapping[str, int] | None = None,
              **pci: int) -> FakeHost:
    """``root``/dev with ``dev_nodes`` and ``root``/sys with a PCI function per bus ID (``pci``: its vendor
    and device IDs, when the backend reads them)."""
    host = FakeHost(make_dev_tree(root / "dev", dev_nodes), root / "sys")
    host.sysfs.mkdir(parents=True, exist_ok=True)
    for bus_id, node in (numa_by_bus_id or {}).items():
        make_pci_device(host.sysfs, bus_id, numa_node=node, **pci)
    return host


def make_dev_tree(root: Path, names: Iterable[str]) -> Path:
    """A fake /dev: plain files stand in for device nodes."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def pci_dir(sysfs: Path, bus_id: str) -> Path:
    return sysfs / "bus" / "pci" / "devices" / bus_id


def make_pci_device(sysfs: Path, bus_id: str, *, vendor: int | None = None, device: int | None = None,
                    numa_node: int = -1, total_vfs: int | None = None) -> Path:
    """A PCI function in the fake sysfs; ``total_vfs`` makes it an SR-IOV capable PF."""
    directory = pci_dir(sysfs, bus_id)
    directory.mkdir(parents=True, exist_ok=True)
    if vendor is not None:
        (directory / "vendor").write_text(f"0x{vendor:04x}\n")
    if device is not None:
        (directory / "device").write_text(f"0x{device:04x}\n")
    (directory / "numa_node").write_text(f"{numa_node}\n")
    if total_vfs is not None:
        (directory / "sriov_totalvfs").write_text(f"{total_vfs}\n")
        (directory / "sriov_numvfs").write_text("0\n")
    return directory


def vf_bus_id(pf_bus_id: str, position: int) -> str:
    """Where the fake kernel puts VF ``position`` of a PF: same bus and slot, function position + 1."""
    return f"{pf_bus_id[:-1]}{position + 1}"


class FakeKernel:
    """A ``sriov_numvfs`` writer with the kernel's rules, acting on a fake sysfs tree."""

    def __init__(self, sysfs: Path, *, vf_device: int = 0x3685,
                 on_change: Callable[[str, list[str]], None] | None = None) -> None:
        self.sysfs = sysfs
        self.vf_device = vf_device
        self.on_change = on_change
        self.writes: list[tuple[str, str]] = []
        self.errors: dict[tuple[str, int], int] = {}  # (PF bus ID, count) -> errno the driver answers with

    def __call__(self, path: str, value: str) -> None:
        pf = Path(path).parent
        self.writes.append((pf.name, value))
        if Path(path).name != "sriov_numvfs" or not (pf / "sriov_totalvfs").exists():
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if not value.strip().isdigit():
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        wanted, total = int(value), int((pf / "sriov_totalvfs").read_text())
        current = int((pf / "sriov_numvfs").read_text())
        if wanted > total:
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE), path)
        if wanted == current:
            return
        if current and wanted:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        if (pf.name, wanted) in self.errors:
            code = self.errors[(pf.name, wanted)]
            raise OSError(code, os.strerror(code), path)
        self._set(pf, wanted)

    def _set(self, pf: Path, count: int) -> None:
        for link in pf.glob("virtfn*"):
            vf = Path(os.path.realpath(link))
            link.unlink()
            (vf / "physfn").unlink()
            for child in vf.iterdir():
                child.unlink()
            vf.rmdir()
        vendor = int((pf / "vendor").read_text(), 16)
        numa = int((pf / "numa_node").read_text())
        created = []
        for position in range(count):
            bus_id = vf_bus_id(pf.name, position)
            vf = make_pci_device(self.sysfs, bus_id, vendor=vendor, device=self.vf_device, numa_node=numa)
            (vf / "physfn").symlink_to(f"../{pf.name}")
            (pf / f"virtfn{position}").symlink_to(f"../{bus_id}")
            created.append(bus_id)
        (pf / "sriov_numvfs").write_text(f"{count}\n")
        if self.on_change is not None:
            self.on_change(pf.name, created)


def xpuml_lists_vfs(fixture: Fixture, pf_bus_id: str, minors: Mapping[str, int]) -> Callable[[str, list[str]], None]:
    """A FakeKernel ``on_change`` doing what the kunlun driver does when VFs appear: XPUML lists the PF (as
    R200-PF) and each VF (R200-VF-8G, 8 GiB); ``minors`` gives the VFs' /dev/xpuN numbers."""

    def on_change(_pf: str, vfs: list[str]) -> None:
        listed = [(pf_bus_id, "R200-PF" if vfs else "R200")] + [(vf, "R200-VF-8G") for vf in vfs]
        fixture.replace_devices([{"bus_id": bus_id, "name": name, "serial": "K200SN0001",
                                  "minor": minors.get(bus_id, index), "memory_total": 8 << 30}
                                 for index, (bus_id, name) in enumerate(listed)])

    return on_change


# -- helpers for the backend tests -----------------------------------------------------------------


def backend_opt_flags(options: Mapping[str, object]) -> list[str]:
    """The krakenplug CLI's ``--backend-opt key=value`` flags for ``options``."""
    return [flag for key, value in options.items() for flag in ("--backend-opt", f"{key}={value}")]


def open_vendor(backend_class: Any, library: Path | None, host: FakeHost, **options: object) -> Any:
    """``backend_class`` over the fake host, loading ``library`` (None: the backend's own search), opened."""
    path = {"library_path": str(library)} if library else {}
    backend = backend_class(backend_class.Options(**path, **host.options, **options), node_name="n1")
    backend.open()
    return backend


@contextlib.contextmanager
def opened(backend: Any) -> Iterator[Any]:
    """Opens ``backend`` for the ``with`` block and closes it after, whatever happens in the block."""
    backend.open()
    try:
        yield backend
    finally:
        backend.close()


def devices_by_id(backend: Any) -> dict[str, Any]:
    """The backend's devices now, by ID."""
    return {device.id: device for device in backend.devices()}


class Watch:
    """``backend.watch_health`` on a thread while in the ``with`` block; ``changed()`` waits for its next
    ``changed()`` call. Entering waits for the first snapshot; leaving stops the thread and checks it ended."""

    def __init__(self, backend: Any) -> None:
        self.changes = threading.Semaphore(0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=backend.watch_health, args=(self.stop, self.changes.release),
                                       daemon=True)

    def __enter__(self) -> Watch:
        self.thread.start()
        assert self.changed(), "watch_health never took its first snapshot"
        return self

    def changed(self) -> bool:
        return self.changes.acquire(timeout=15)

    def expect_change(self, shown: Callable[[], bool]) -> None:
        """Waits for the next ``changed()`` call and checks that ``shown()`` (the devices show the change)."""
        assert self.changed(), "watch_health reported no change"
        assert shown(), "changed() was called but the devices do not show the change"

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "watch_health did not return after stop was set"


def expect_bounded_hang(backend: Any, fixture: Fixture, *, hang: str, seconds: float, device_id: str,
                        reason: str) -> None:
    """While the ``hang`` key makes a call sleep ``seconds``, the device ``device_id`` is Unhealthy with
    ``reason`` (the call timed out) and every other device stays healthy; without it, it is healthy again."""
    fixture.update({hang: seconds})
    devices = devices_by_id(backend)
    assert (devices[device_id].health, devices[device_id].health_reason) == (base.Health.UNHEALTHY, reason)
    assert [other for other, device in devices.items() if other != device_id and not device.healthy] == []
    fixture.remove(hang)
    assert devices_by_id(backend)[device_id].healthy  # the same call returns in time again


def expect_bounded_sample_hang(backend: Any, fixture: Fixture, device: Any, *, hang: str, seconds: float,
                               reason: str) -> base.DeviceSample:
    """While the ``hang`` key makes a metric call sleep, ``sample(device)`` raises DeviceQueryError with
    ``reason`` and the device is Unhealthy for it; without it, the device is sampled and healthy again.
    Returns that last sample."""
    fixture.update({hang: seconds})
    with pytest.raises(errors.DeviceQueryError, match=re.escape(reason)):
        backend.sample(device)
    assert reason in devices_by_id(backend)[device.id].health_reason
    fixture.remove(hang)
    sample = backend.sample(device)
    assert devices_by_id(backend)[device.id].healthy
    return sample


def expect_init_error_handled(vendor: str, options: Mapping[str, object], *, fail_on_init_error: bool,
                              match: str | None = None) -> None:
    """``backends.open_backend`` on a library whose init fails: BackendUnavailable (matching ``match``) with
    ``fail_on_init_error``, otherwise a retrying backend with zero devices."""
    config = settings.load(overrides={"backend": vendor, "fail_on_init_error": fail_on_init_error,
                                      "backends": {vendor: dict(options)}})
    if fail_on_init_error:
        with pytest.raises(errors.BackendUnavailable, match=match):
            backends.open_backend(config)
        return
    degraded = backends.open_backend(config)
    try:
        assert isinstance(degraded, fallback.RetryingBackend)
        assert list(degraded.devices()) == []
    finally:
        degraded.close()


def devices_json(vendor: str, **options: object) -> list[dict[str, Any]]:
    """The rows of ``krakenplug devices --backend <vendor> --json`` with ``options``, run as its own process
    without KRAKENPLUG_* or NODE_NAME in its environment (the fixture variables stay)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("KRAKENPLUG_") and key != "NODE_NAME"}
    result = subprocess.run([sys.executable, "-m", "krakenplug", "devices", "--backend", vendor, "--json",
                             *backend_opt_flags(options)],
                            check=False, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)

"""Test helpers for the NVIDIA, Ascend and Cambricon backends: fixture files and fake host trees.

The fake libraries (fakelibs/fake_{nvml,dcmi,cndev}.c) read a "key=value" fixture on every call (see
fakelibs/fixture.h); ``Fixture`` rewrites it atomically so a call never sees half a file.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def compile_fake_library(source: str, soname: str, out_dir: Path, *, defines: Sequence[str] = ()) -> Path:
    """The shared builder from this directory's conftest.py, loaded by path (``import conftest`` is ambiguous)."""
    spec = importlib.util.spec_from_file_location("_backends_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compile_fake_library(source, soname, out_dir, defines=defines)


class Fixture:
    """The fixture file of one fake library; ``update`` changes some keys and rewrites the file."""

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

    def _flush(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("".join(f"{key}={value}\n" for key, value in self.values.items()))
        os.replace(temporary, self.path)


def make_dev_tree(root: Path, names: Iterable[str]) -> Path:
    """A fake /dev: plain files stand in for device nodes."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def make_sysfs(root: Path, numa_by_bus_id: Mapping[str, int]) -> Path:
    """A fake /sys with ``bus/pci/devices/<bdf>/numa_node`` for each PCI device."""
    for bus_id, node in numa_by_bus_id.items():
        device_dir = root / "bus" / "pci" / "devices" / bus_id
        device_dir.mkdir(parents=True, exist_ok=True)
        (device_dir / "numa_node").write_text(f"{node}\n")
    return root

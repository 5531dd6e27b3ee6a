"""Shared bits of the NVIDIA, Ascend and Cambricon node e2e tests.

The fake vendor libraries and their fixture files are the unit tests' (tests/unit/backends/fakelib_a.py,
loaded by path since test directories are not packages).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_HELPER = Path(__file__).resolve().parents[2] / "unit" / "backends" / "fakelib_a.py"
_spec = importlib.util.spec_from_file_location("_fakelib_a_for_e2e", _HELPER)
fakelib_a = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakelib_a)

Fixture = fakelib_a.Fixture
compile_fake_library = fakelib_a.compile_fake_library
make_dev_tree = fakelib_a.make_dev_tree
make_sysfs = fakelib_a.make_sysfs

WAIT = 30.0


def backend_flags(vendor: str, library: Path, root: Path, **options: object) -> list[str]:
    """``krakenplug run`` flags selecting ``vendor`` on the fake library with the node's fake host trees."""
    flags = ["--backend", vendor]
    for key, value in {"library_path": library, "dev_root": root / "hostdev", "sysfs_root": root / "hostsys",
                       **options}.items():
        flags += ["--backend-opt", f"{key}={value}"]
    return flags


def container_devices(response) -> list[tuple[str, str]]:
    (container,) = response.container_responses
    return [(spec.host_path, spec.container_path) for spec in container.devices]

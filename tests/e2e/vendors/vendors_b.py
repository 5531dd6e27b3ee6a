"""Shared bits of the Kunlun and StreamComputing node e2e tests.

The fake libraries, the fake stc-smi and the Kubernetes API stand-in are the unit tests'
(tests/unit/backends/fakelib_b.py, loaded by path since test directories are not packages).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_HELPER = Path(__file__).resolve().parents[2] / "unit" / "backends" / "fakelib_b.py"
_spec = importlib.util.spec_from_file_location("_fakelib_b_for_e2e", _HELPER)
fakelib_b = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakelib_b)

FAKE_STC_SMI = fakelib_b.FAKE_STC_SMI
Fixture = fakelib_b.Fixture
KubeApiStandIn = fakelib_b.KubeApiStandIn
compile_fake_library = fakelib_b.compile_fake_library
make_dev_tree = fakelib_b.make_dev_tree
make_pci_device = fakelib_b.make_pci_device

WAIT = 30.0


def backend_flags(vendor: str, root: Path, **options: object) -> list[str]:
    """``krakenplug run`` flags selecting ``vendor`` with the node's fake host trees and ``options``."""
    flags = ["--backend", vendor]
    for key, value in {"dev_root": root / "hostdev", "sysfs_root": root / "hostsys", **options}.items():
        flags += ["--backend-opt", f"{key}={value}"]
    return flags


def container_devices(response) -> list[tuple[str, str]]:
    (container,) = response.container_responses
    return [(spec.host_path, spec.container_path) for spec in container.devices]

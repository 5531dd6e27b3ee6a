"""Shared bits of the vendor node e2e tests: ``krakenplug run`` against each fake vendor library.

The fake libraries, their fixture files, the fake host trees and the Kubernetes API stand-in are the unit
tests' (tests/unit/backends/fakelib.py and fakecluster.py), loaded by path since test directories are not
packages.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_BACKEND_TESTS = Path(__file__).resolve().parents[2] / "unit" / "backends"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_vendors_{name}", _BACKEND_TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


fakelib = _load("fakelib")
fakecluster = _load("fakecluster")

FAKE_STC_SMI = fakelib.FAKE_STC_SMI
Fixture = fakelib.Fixture
KubeApiStandIn = fakecluster.KubeApiStandIn
compile_fake_library = fakelib.compile_fake_library
make_dev_tree = fakelib.make_dev_tree
make_pci_device = fakelib.make_pci_device

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

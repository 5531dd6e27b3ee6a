"""Shared bits of the vendor node e2e tests: ``krakenplug run`` against each fake vendor library.

The fake libraries, their fixture files, the fake host trees and the Kubernetes API stand-in are the unit
tests' (tests/unit/backends/fakelib.py and fakecluster.py), loaded by path since test directories are not
packages.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

_BACKEND_TESTS = Path(__file__).resolve().parents[2] / "unit" / "backends"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_vendors_{name}", _BACKEND_TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


fakelib = _load("fakelib")
fakecluster = _load("fakecluster")

CNDEV, DCMI, NVML, STCML, XPUML = fakelib.CNDEV, fakelib.DCMI, fakelib.NVML, fakelib.STCML, fakelib.XPUML
FAKE_STC_SMI = fakelib.FAKE_STC_SMI
FakeHost = fakelib.FakeHost
Fixture = fakelib.Fixture
KubeApiStandIn = fakecluster.KubeApiStandIn
fake_host = fakelib.fake_host
fixture_values = fakelib.fixture_values
make_pci_device = fakelib.make_pci_device

WAIT = 30.0


def backend_flags(vendor: str, host: FakeHost, **options: object) -> list[str]:
    """``krakenplug run`` flags selecting ``vendor`` on the fake ``host`` with ``options``."""
    return ["--backend", vendor, *fakelib.backend_opt_flags({**host.options, **options})]


def container_devices(response: Any) -> list[tuple[str, str]]:
    """(host path, container path) of the device nodes of a one-container Allocate response."""
    (container,) = response.container_responses
    return [(spec.host_path, spec.container_path) for spec in container.devices]


def expect_health_round_trip(kubelet: Any, resource: str, fixture: Fixture, device_id: str, *,
                             sick: Mapping[str, Any], healthy: Mapping[str, Any] | None) -> None:
    """The ``sick`` fixture change makes ``device_id`` Unhealthy and no longer allocatable; the ``healthy``
    one (None: nothing, for a backend that recovers by itself) makes every device allocatable again."""
    capacity = fixture.values["count"]
    fixture.update(sick)
    state = kubelet.wait_for_resource(resource, capacity=capacity, allocatable=capacity - 1, timeout=WAIT)
    assert state.devices[device_id].health == "Unhealthy"
    if healthy is not None:
        fixture.update(healthy)
    kubelet.wait_for_resource(resource, capacity=capacity, allocatable=capacity, timeout=WAIT)

"""The exposition: golden file and promtool lint of what prometheus_client renders from the collector."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from exporter_helpers import RESOURCE, container, fake_backend, hub_for, pod, response
from prometheus_client import generate_latest

from krakenplug.exporter import attribution, build_registry, make_collector
from krakenplug.exporter.collector import StaticPods

GOLDEN = Path(__file__).parent / "metrics.golden.prom"
_DURATION = re.compile(r"^(krakenplug_collector_duration_seconds\{[^}]*\}) \S+$", re.MULTILINE)

# The kubelet's answer behind the golden file: every attribution rule shows up once.
GOLDEN_PODS = response(
    # fake-0 in one container, listed once per NUMA node as the kubelet flattens it
    pod("trainer-0", "ml", container("main", (RESOURCE, ["fake-0"], [0]), (RESOURCE, ["fake-0"], [1]))),
    # fake-1 time-sliced between two pods: the device series names neither
    pod("infer-a", "serve", container("server", (RESOURCE, ["fake-1::0"], [0]))),
    pod("infer-b", "serve", container("server", (RESOURCE, ["fake-1::1", "fake-1::2"], [0]))),
    # fake-2 shared by two containers of one pod: pod and namespace named, container empty
    pod("etl", "data", container("reader", (RESOURCE, ["fake-2::0"], [1])),
        container("writer", (RESOURCE, ["fake-2::1"], [1]))),
    # other plugins' resources, including one whose ID looks like ours: ignored; fake-3 stays free
    pod("other", "ml", container("main", ("nvidia.com/gpu", ["fake-3"], []), ("example.com/fpga", ["0"], []))),
)


def golden_collector(*, base_unit_metrics: bool = True):
    pods = attribution.PodAttribution(allocations=attribution.flatten(GOLDEN_PODS), up=True,
                                      last_success_unix=1700000000.0)
    return make_collector(hub_for(fake_backend()), node_name="golden-node", pods=StaticPods(pods),
                          base_unit_metrics=base_unit_metrics, version="0.0.0-golden", python_version="3.11.0")


@pytest.fixture
def collector():
    made = golden_collector()
    yield made
    made.close()


def normalized(exposition: bytes) -> str:
    return _DURATION.sub(r"\1 0.0", exposition.decode())


def test_exposition_matches_the_golden_file(collector, request):
    text = normalized(generate_latest(build_registry(collector)))
    if request.config.getoption("--update-golden"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "exposition changed; rerun with --update-golden if that is intended"


def _promtool(exposition: bytes) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is required (apt-get install prometheus)")
    return subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60,
                          check=False)


@pytest.mark.parametrize("base_units", [False, True], ids=["default", "base-unit-twins"])
def test_promtool_accepts_the_exposition(base_units):
    made = golden_collector(base_unit_metrics=base_units)
    try:
        result = _promtool(generate_latest(build_registry(made)))
    finally:
        made.close()
    # Exit 1 would be a parse error. The one lint finding is the metric name the product contract fixes:
    # promtool wants "_total" only on counters, and krakenplug_device_memory_total is a gauge.
    problems = (result.stdout + result.stderr).decode().strip().splitlines()
    assert result.returncode == 3, problems
    assert problems == ['krakenplug_device_memory_total non-counter metrics should not have "_total" suffix']

"""The exposition: golden file, promtool lint, and the fast renderer byte-equal to prometheus_client."""

from __future__ import annotations

import gzip
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from exporter_helpers import RESOURCE, VendorExtrasFake, container, fake_backend, hub_for, pod, response
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_generate_latest

from krakenplug.backends.base import LibraryInfo
from krakenplug.exporter import attribution, build_registry, make_collector
from krakenplug.exporter.collector import StaticPods, to_metric_families
from krakenplug.exporter.exposition import TextRenderer
from krakenplug.exporter.families import Family
from krakenplug.exporter.routes import make_app

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
    hub = hub_for(fake_backend(cls=VendorExtrasFake))  # every optional family shows up in the golden file
    return make_collector(hub, node_name="golden-node", pods=StaticPods(pods),
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


# -- the fast renderer: the same bytes as prometheus_client, in both formats Prometheus negotiates --------

FORMATS = {"text": generate_latest, "openmetrics": openmetrics_generate_latest}


def _reference(families: list[Family], fmt: str = "text") -> bytes:
    class Fixed:
        def collect(self):
            return to_metric_families(families)

    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(Fixed())
    return FORMATS[fmt](registry)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fast_renderer_writes_the_same_bytes_as_prometheus_client(collector, fmt):
    families = collector.scrape()
    assert TextRenderer(openmetrics=fmt == "openmetrics").render(families) == _reference(families, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_renderer_forgets_departed_series(collector, fmt):
    renderer = TextRenderer(openmetrics=fmt == "openmetrics")
    families = collector.scrape()
    renderer.render(families)
    kept = [Family(f.name, f.documentation, f.labelnames, f.samples[:1]) for f in families]
    assert renderer.render(kept) == _reference(kept, fmt)
    assert renderer.render(families) == _reference(families, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_renderer_follows_a_change_of_backend_info(fmt):
    backend = fake_backend(cls=VendorExtrasFake)
    made = make_collector(hub_for(backend), node_name="n")
    try:
        renderer = TextRenderer(openmetrics=fmt == "openmetrics")
        renderer.render(made.scrape())
        backend.library = LibraryInfo(library=None, api="none", path="sysfs", reason="library gone")
        families = made.scrape()
        assert b'vendor_path="sysfs",vendor_reason="library gone"' in renderer.render(families)
        assert renderer.render(families) == _reference(families, fmt)
    finally:
        made.close()


_LABEL_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | \
    st.sampled_from(['"', "\\", "\n", 'a\\"b', "\\n", "ü", "🐙"])
_VALUES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e21, 123456789.0, 5e-324])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.tuples(_LABEL_TEXT, _LABEL_TEXT), _VALUES), max_size=6),
       st.text(max_size=30), st.sampled_from(sorted(FORMATS)))
def test_renderer_equals_prometheus_client_on_any_labels_and_values(samples, documentation, fmt):
    families = [
        Family("krakenplug_test_labelled", documentation or "help", ("zeta", "alpha"), list(samples)),
        Family("krakenplug_test_plain", 'a\\b\nc"d', (), [((), samples[0][1] if samples else math.pi)]),
    ]
    renderer = TextRenderer(openmetrics=fmt == "openmetrics")
    assert renderer.render(families) == _reference(families, fmt)
    assert renderer.render(families) == _reference(families, fmt)  # again, from the cache


# What Prometheus 2 and 3 send (scrape_protocols defaults and the classic text choice), curl's nothing,
# and formats only the library serves (OpenMetrics 0.0.1 falls back to text; name[] filters).
_ACCEPT = [
    "",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;"
    "version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;version=0.0.1",
    "application/openmetrics-text",
]


@pytest.mark.parametrize("accept", _ACCEPT, ids=range(len(_ACCEPT)))
@pytest.mark.parametrize("query", ["", "name[]=krakenplug_device_util&name[]=krakenplug_collector_up"])
@pytest.mark.parametrize("encoding", ["", "gzip"])
def test_the_fast_answer_is_the_library_answer(collector, accept, query, encoding):
    registry = build_registry(collector)
    ours = make_app(registry, health=lambda: (True, "ok"), title="t", families=collector.scrape)
    library = make_app(registry, health=lambda: (True, "ok"), title="t")
    answers = []
    for app in (ours, library):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": query,
                   "HTTP_ACCEPT": accept, "HTTP_ACCEPT_ENCODING": encoding}
        started: list = []
        body = b"".join(app(environ, lambda status, headers, *exc: started.append((status, dict(headers)))))
        status, headers = started[0]
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        answers.append((status, headers, normalized(body)))
    assert answers[0] == answers[1]

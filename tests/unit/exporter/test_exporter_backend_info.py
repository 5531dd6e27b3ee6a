"""krakenplug_backend_info through the exporter, for the StreamComputing backend on the fake STCML (issue 9):
an operator sees at once whether STCML or sysfs + stc-smi serves the NPUs, and why.

The fake library, its fixture file and the fake host trees are the backend tests' (tests/unit/backends).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporter_helpers import hub_for
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))

from fakelib import FAKE_STC_SMI, STCML, FakeHost, fake_host, fixture_values, make_dev_tree  # noqa: E402

from krakenplug import errors  # noqa: E402
from krakenplug.backends import base, fallback  # noqa: E402
from krakenplug.backends.streamcomputing import StreamComputingBackend, StreamComputingOptions  # noqa: E402
from krakenplug.exporter import build_registry, make_collector  # noqa: E402

BUS0, BUS1 = "0000:03:00.0", "0000:65:00.0"


@pytest.fixture(scope="module")
def stcml_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return STCML.build(tmp_path_factory.mktemp("stcml"))


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    STCML.fixture(tmp_path / "stcml.fixture", fixture_values([
        {"bus_id": BUS0, "index": 0, "uuid": "UUID-A"}, {"bus_id": BUS1, "index": 1, "uuid": "UUID-B"},
    ], driver_version="1.9.3"), monkeypatch)
    for name in ("FAKE_STC_SMI_OUTPUT", "FAKE_STC_SMI_EXIT", "FAKE_STC_SMI_SLEEP"):
        monkeypatch.delenv(name, raising=False)  # stc-smi prints nothing: only the usage series are absent
    return fake_host(tmp_path, ["stc0", "stc0ctrl", "stc1", "stc1ctrl"], {BUS0: 0, BUS1: 1},
                     vendor=0x23E2, device=0x0100)


def _backend(host: FakeHost, library: Path) -> StreamComputingBackend:
    return StreamComputingBackend(StreamComputingOptions(
        library_path=str(library), **host.options, smi_path=str(FAKE_STC_SMI), call_timeout_seconds=1.0),
        node_name="node-a")


@pytest.fixture
def backend_info() -> Iterator:
    """backend_info(backend) -> the labels of each krakenplug_backend_info sample of one scrape; closes it all."""
    opened: list = []

    def scrape(backend: base.Backend) -> list[dict[str, str]]:
        opened.append(backend)
        collector = make_collector(hub_for(backend), node_name="node-a")
        try:
            text = generate_latest(build_registry(collector)).decode()
        finally:
            collector.close()
        return [sample.labels for family in text_string_to_metric_families(text)
                if family.name == "krakenplug_backend_info" for sample in family.samples]

    yield scrape
    for backend in opened:
        backend.close()


def test_stcml_in_use(stcml_library: Path, host: FakeHost, backend_info) -> None:
    backend = _backend(host, stcml_library)
    backend.open()
    (labels,) = backend_info(backend)
    assert {key: labels[key] for key in ("vendor", "vendor_library", "vendor_api", "vendor_path")} == {
        "vendor": "streamcomputing", "vendor_library": str(stcml_library), "vendor_api": "stcml",
        "vendor_path": "stcml+sysfs+stc-smi"}
    assert labels["vendor_reason"].startswith("stcmlInit succeeded; NPUs matched to STCML by bus-ID lookup")


def test_sysfs_and_stc_smi_without_the_library(host: FakeHost, tmp_path: Path, backend_info) -> None:
    backend = _backend(host, tmp_path / "absent" / "libstcml.so")
    backend.open()
    (labels,) = backend_info(backend)
    assert (labels["vendor_library"], labels["vendor_api"], labels["vendor_path"]) == ("", "none", "sysfs+stc-smi")
    assert "cannot load the StreamComputing STCML library" in labels["vendor_reason"]
    assert "serving NPUs from sysfs and /dev, metrics from stc-smi only" in labels["vendor_reason"]


def test_an_unavailable_backend_says_why(tmp_path: Path, backend_info) -> None:
    # No NPU at all: the agent serves zero devices through the retrying wrapper, which forwards library_info.
    empty = FakeHost(make_dev_tree(tmp_path / "dev", ["null"]), tmp_path / "sys")
    backend = _backend(empty, tmp_path / "absent" / "libstcml.so")
    with pytest.raises(errors.BackendUnavailable) as raised:
        backend.open()
    (labels,) = backend_info(fallback.RetryingBackend(backend, first_error=raised.value))
    assert (labels["vendor"], labels["vendor_path"]) == ("streamcomputing", "none")
    assert labels["vendor_reason"].startswith("unavailable: no StreamComputing NPU found")

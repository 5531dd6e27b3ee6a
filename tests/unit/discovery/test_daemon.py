"""The discovery daemon end to end: real fake backend, real kubernetes client, API stand-in over HTTP."""

from __future__ import annotations

import logging
import os
import time

import pytest

from krakenplug.discovery import output

from .apiserver import FakeApiServer
from .conftest import NODE, make_backend, make_settings, ours, wait_until, write_devices

D = "krakenplug.pcl.ac.cn"
FOREIGN = {"kubernetes.io/hostname": NODE, "team": "ml", "nvidia.com/gpu.present": "true"}
FOUR_SIMS = [(f"sim-{i}", "KrakenSim 80G", 81920) for i in range(4)]
EXPECTED_FOUR = {
    f"{D}/fake.count": "4", f"{D}/fake.model": "KrakenSim-80G", f"{D}/fake.memory": "81920",
    f"{D}/fake.driver-version": "fake-1.0", f"{D}/fake.model.KrakenSim-80G.count": "4",
    f"{D}/device.vendor": "fake", f"{D}/device.count": "4", f"{D}/device.model": "KrakenSim-80G",
    f"{D}/device.memory": "81920", f"{D}/device.driver-version": "fake-1.0",
}


def gets_after(api: FakeApiServer, count: int) -> bool:
    return len(api.recorded("GET")) >= count


def test_first_run_labels_the_node_with_one_merge_patch(api, kubeconfig, tmp_path, run_discovery) -> None:
    api.add_node(NODE, FOREIGN)
    backend = make_backend(write_devices(tmp_path / "devices.yaml", FOUR_SIMS))
    run_discovery(make_settings(kubeconfig=kubeconfig), backend)
    wait_until(lambda: ours(api.labels(NODE)) == EXPECTED_FOUR, what="first labelling")
    assert {k: v for k, v in api.labels(NODE).items() if k in FOREIGN} == FOREIGN
    patches = api.recorded("PATCH")
    assert len(patches) == 1
    assert patches[0].content_type == "application/merge-patch+json"
    assert patches[0].body["metadata"]["labels"] == EXPECTED_FOUR
    assert patches[0].body["metadata"]["resourceVersion"]  # precondition on the version that was read


def test_steady_state_reads_each_interval_and_never_writes(api, kubeconfig, tmp_path, run_discovery) -> None:
    api.add_node(NODE, FOREIGN)
    backend = make_backend(write_devices(tmp_path / "devices.yaml", FOUR_SIMS))
    run_discovery(make_settings(kubeconfig=kubeconfig, interval_seconds=0.2), backend)
    wait_until(lambda: ours(api.labels(NODE)) == EXPECTED_FOUR, what="first labelling")
    gets = len(api.recorded("GET"))
    wait_until(lambda: gets_after(api, gets + 4), what="four more interval re-reads")
    assert len(api.recorded("PATCH")) == 1
    assert [r.method for r in api.recorded()] == ["GET", "PATCH"] + ["GET"] * (len(api.recorded()) - 2)


def test_device_changes_update_labels_and_vanished_devices_remove_them(api, kubeconfig, tmp_path,
                                                                       run_discovery) -> None:
    api.add_node(NODE, FOREIGN)
    devices = write_devices(tmp_path / "devices.yaml", FOUR_SIMS)
    # A long interval: whatever happens next is driven by the device poll, not the slow re-read.
    run_discovery(make_settings(kubeconfig=kubeconfig, interval_seconds=3600), make_backend(devices))
    wait_until(lambda: ours(api.labels(NODE)) == EXPECTED_FOUR, what="first labelling")

    write_devices(devices, [("a", "T4", 15360), ("b", "A100/80GB", 81920), ("c", "A100/80GB", 81920)])
    wait_until(lambda: api.labels(NODE).get(f"{D}/device.model") == "A100-80GB", what="relabelling")
    assert ours(api.labels(NODE)) == {
        f"{D}/fake.count": "3", f"{D}/fake.model": "A100-80GB", f"{D}/fake.memory": "81920",
        f"{D}/fake.driver-version": "fake-1.0", f"{D}/fake.model.A100-80GB.count": "2",
        f"{D}/fake.model.T4.count": "1", f"{D}/device.vendor": "fake", f"{D}/device.count": "3",
        f"{D}/device.model": "A100-80GB", f"{D}/device.memory": "81920", f"{D}/device.driver-version": "fake-1.0",
    }
    second = api.recorded("PATCH")[1].body["metadata"]["labels"]
    assert second[f"{D}/fake.model.KrakenSim-80G.count"] is None  # removed with a null, nothing else resent
    assert f"{D}/device.vendor" not in second

    write_devices(devices, [])
    wait_until(lambda: len(ours(api.labels(NODE))) == 1, what="label removal")
    # Everything goes but the scheduling label, which keeps the agent's DaemonSet on the node.
    assert api.labels(NODE) == {**FOREIGN, f"{D}/device.vendor": "fake"}


def test_manual_edits_of_our_labels_are_undone_and_other_labels_left_alone(api, kubeconfig, tmp_path,
                                                                          run_discovery) -> None:
    api.add_node(NODE, FOREIGN)
    backend = make_backend(write_devices(tmp_path / "devices.yaml", FOUR_SIMS))
    run_discovery(make_settings(kubeconfig=kubeconfig, interval_seconds=0.2), backend)
    wait_until(lambda: ours(api.labels(NODE)) == EXPECTED_FOUR, what="first labelling")
    api.edit_labels(NODE, {f"{D}/device.model": "hand-edited", f"{D}/fake.count": None,
                           "team": "infra", "added-by-admin": "yes"})
    wait_until(lambda: ours(api.labels(NODE)) == EXPECTED_FOUR, what="correction at the next interval")
    assert api.labels(NODE)["team"] == "infra"
    assert api.labels(NODE)["added-by-admin"] == "yes"
    assert api.recorded("PATCH")[-1].body["metadata"]["labels"] == {f"{D}/device.model": "KrakenSim-80G",
                                                                   f"{D}/fake.count": "4"}


def test_model_names_invalid_as_labels_are_sanitized(api, kubeconfig, tmp_path, run_discovery) -> None:
    api.add_node(NODE, FOREIGN)
    models = [("x0", "NVIDIA A100/SXM4 (80 GB)", 81920), ("x1", "昇腾 910B", 65536), ("x2", "昇腾 910B", 65536),
              ("x3", "V" * 80, 1)]
    run_discovery(make_settings(kubeconfig=kubeconfig), make_backend(write_devices(tmp_path / "d.yaml", models)))
    wait_until(lambda: ours(api.labels(NODE)), what="labelling")
    labels = api.labels(NODE)
    assert labels[f"{D}/device.model"] == "910B"
    assert labels[f"{D}/fake.model.NVIDIA-A100-SXM4-80-GB.count"] == "1"
    assert labels[f"{D}/fake.model.910B.count"] == "2"
    assert not any("VVVV" in key for key in labels)  # its key would exceed 63 characters
    assert all(r.status == 200 for r in api.recorded())  # the stand-in answers 422 to any invalid label


def test_api_errors_are_retried_with_backoff_until_they_clear(api, kubeconfig, tmp_path, run_discovery,
                                                              caplog) -> None:
    caplog.set_level(logging.INFO, logger="krakenplug.discovery")
    api.add_node(NODE, FOREIGN)
    api.fail(500, method="GET")
    api.fail(403, method="GET")
    api.fail(delay=1.5, times=2, method="GET")  # slower than api_timeout_seconds, also for the client's retry
    api.fail(500, method="PATCH")
    backend = make_backend(write_devices(tmp_path / "devices.yaml", FOUR_SIMS))
    run_discovery(make_settings(kubeconfig=kubeconfig, interval_seconds=3600), backend)
    wait_until(lambda: ours(api.labels(NODE)) == EXPECTED_FOUR, what="recovery")
    wait_until(lambda: any("up to date again" in r.getMessage() for r in caplog.records), what="recovery logged")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("HTTP 500" in m and "reading node node-a" in m for m in warnings)
    assert any("HTTP 403" in m and "RBAC" in m for m in warnings)
    assert any("no answer from http://127.0.0.1" in m for m in warnings)
    assert any("HTTP 500" in m and "patching labels of node node-a" in m for m in warnings)
    attempts = [m for m in warnings if "retrying in" in m]
    assert [m.rsplit("(attempt ", 1)[1] for m in attempts] == ["1)", "2)", "3)", "4)"]
    assert [r.status for r in api.recorded("PATCH")] == [500, 200]


def test_a_missing_node_is_reported_and_labelled_once_it_exists(api, kubeconfig, tmp_path, run_discovery,
                                                                caplog) -> None:
    backend = make_backend(write_devices(tmp_path / "devices.yaml", FOUR_SIMS))
    run_discovery(make_settings(kubeconfig=kubeconfig), backend)
    wait_until(lambda: len([r for r in api.recorded("GET") if r.status == 404]) >= 2, what="two 404s")
    assert any("HTTP 404" in r.getMessage() and "node_name" in r.getMessage() for r in caplog.records)
    api.add_node(NODE, FOREIGN)
    wait_until(lambda: ours(api.labels(NODE)) == EXPECTED_FOUR, what="labelling after the node appeared")


def test_a_conflicting_write_is_re_read_and_patched_again(api, kubeconfig, tmp_path, run_discovery) -> None:
    api.add_node(NODE, FOREIGN)
    raced: list[str] = []

    def someone_else_writes_first(name: str) -> None:
        if not raced:
            raced.append(name)
            api.edit_labels(name, {"written-meanwhile": "yes"})

    api.before_patch = someone_else_writes_first
    backend = make_backend(write_devices(tmp_path / "devices.yaml", FOUR_SIMS))
    run_discovery(make_settings(kubeconfig=kubeconfig), backend)
    wait_until(lambda: ours(api.labels(NODE)) == EXPECTED_FOUR, what="labelling after a conflict")
    assert api.labels(NODE)["written-meanwhile"] == "yes"
    assert [(r.method, r.status) for r in api.recorded()][:4] == [("GET", 200), ("PATCH", 409), ("GET", 200),
                                                                   ("PATCH", 200)]


def test_unreachable_api_server_never_stops_discovery(tmp_path, run_discovery, caplog, clean_env) -> None:
    with FakeApiServer() as gone:
        kubeconfig = gone.write_kubeconfig(tmp_path / "kubeconfig")
    features = tmp_path / "features.d" / "krakenplug-fake"
    backend = make_backend(write_devices(tmp_path / "devices.yaml", FOUR_SIMS))
    run_discovery(make_settings(kubeconfig=kubeconfig, features_file=features), backend)
    wait_until(lambda: sum("cannot reach" in r.getMessage() for r in caplog.records) >= 3, what="three retries")
    assert output.parse(features.read_text()) == EXPECTED_FOUR


def test_without_cluster_config_only_the_features_file_is_written(no_cluster, tmp_path, run_discovery,
                                                                  caplog) -> None:
    features = tmp_path / "features.d" / "krakenplug-fake"
    devices = write_devices(tmp_path / "devices.yaml", FOUR_SIMS)
    run_discovery(make_settings(kubeconfig=None, features_file=features, interval_seconds=0.1), make_backend(devices))
    wait_until(features.exists, what="features file")
    assert output.parse(features.read_text()) == EXPECTED_FOUR
    first = os.stat(features)
    write_devices(devices, FOUR_SIMS[:2])
    wait_until(lambda: output.parse(features.read_text()).get(f"{D}/fake.count") == "2", what="rewrite")
    assert os.stat(features).st_ino != first.st_ino  # replaced, not rewritten in place
    rewritten = os.stat(features)
    time.sleep(0.6)  # six intervals with nothing to change: the file must be left alone
    assert (os.stat(features).st_ino, os.stat(features).st_mtime_ns) == (rewritten.st_ino, rewritten.st_mtime_ns)
    assert sum("no Kubernetes API access" in r.getMessage() for r in caplog.records) == 1
    assert sorted(p.name for p in features.parent.iterdir()) == ["krakenplug-fake"]


def test_features_file_matches_the_node_and_is_rewritten_only_on_change(api, kubeconfig, tmp_path,
                                                                        run_discovery) -> None:
    api.add_node(NODE, FOREIGN)
    features = tmp_path / "features.d" / "krakenplug-fake"
    devices = write_devices(tmp_path / "devices.yaml", FOUR_SIMS)
    run_discovery(make_settings(kubeconfig=kubeconfig, features_file=features, interval_seconds=0.1),
                  make_backend(devices))
    wait_until(lambda: features.exists() and ours(api.labels(NODE)), what="file and node")
    assert output.parse(features.read_text()) == ours(api.labels(NODE)) == EXPECTED_FOUR
    before = os.stat(features)
    gets = len(api.recorded("GET"))
    wait_until(lambda: gets_after(api, gets + 4), what="four more intervals")
    assert (os.stat(features).st_ino, os.stat(features).st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("first", ["fake", "acme"], ids=["fake-starts-first", "acme-starts-first"])
def test_two_vendors_on_one_node_converge_without_flapping(api, kubeconfig, tmp_path, run_discovery, first) -> None:
    api.add_node(NODE, FOREIGN)
    fake_devices = write_devices(tmp_path / "fake.yaml", [("f0", "Sim-A", 1000), ("f1", "Sim-A", 1000)])
    acme_devices = write_devices(tmp_path / "acme.yaml", [(f"a{i}", "Acme X1", 2000) for i in range(3)])
    backends = {"fake": make_backend(fake_devices), "acme": make_backend(acme_devices, name="acme")}
    config = make_settings(kubeconfig=kubeconfig, interval_seconds=0.15)
    run_discovery(config, backends[first])
    run_discovery(config, backends["acme" if first == "fake" else "fake"])

    def shows(vendor: str, count: str, model: str) -> bool:
        labels = api.labels(NODE)
        return (labels.get(f"{D}/device.vendor"), labels.get(f"{D}/device.count"),
                labels.get(f"{D}/device.model")) == (vendor, count, model) and f"{D}/fake.count" in labels \
            and f"{D}/acme.count" in labels

    wait_until(lambda: shows("acme", "3", "Acme-X1"), what="acme leading with 3 devices")
    _assert_stable(api)

    write_devices(fake_devices, [(f"f{i}", "Sim-A", 1000) for i in range(5)])
    wait_until(lambda: shows("fake", "5", "Sim-A"), what="fake leading with 5 devices")
    assert api.labels(NODE)[f"{D}/device.memory"] == "1000"
    _assert_stable(api)

    write_devices(fake_devices, [])
    wait_until(lambda: f"{D}/fake.count" not in api.labels(NODE) and shows_acme_only(api), what="fake gone")
    _assert_stable(api)
    assert {k: v for k, v in api.labels(NODE).items() if not k.startswith(f"{D}/")} == FOREIGN


def shows_acme_only(api: FakeApiServer) -> bool:
    labels = api.labels(NODE)
    return labels.get(f"{D}/device.vendor") == "acme" and not any(k.startswith(f"{D}/fake.") for k in labels)


def _assert_stable(api: FakeApiServer) -> None:
    """Both processes re-read the node several times and neither writes again."""
    patches = len(api.recorded("PATCH"))
    gets = len(api.recorded("GET"))
    wait_until(lambda: gets_after(api, gets + 8), what="several intervals of both processes")
    assert len(api.recorded("PATCH")) == patches, [r.body for r in api.recorded("PATCH")[patches:]]


def test_feature_files_of_two_vendors_agree_without_touching_the_api(api, kubeconfig, tmp_path,
                                                                     run_discovery) -> None:
    directory = tmp_path / "features.d"
    fake_devices = write_devices(tmp_path / "fake.yaml", [("f0", "Sim-A", 1000)])
    acme_devices = write_devices(tmp_path / "acme.yaml", [("a0", "Acme X1", 2000), ("a1", "Acme X1", 2000)])
    for name, devices in (("fake", fake_devices), ("acme", acme_devices)):
        config = make_settings(kubeconfig=kubeconfig, patch_node=False, interval_seconds=0.1,
                               features_file=directory / f"krakenplug-{name}")
        run_discovery(config, make_backend(devices, name=name))
    files = {name: directory / f"krakenplug-{name}" for name in ("fake", "acme")}

    def node_wide(name: str) -> dict[str, str]:
        if not files[name].exists():
            return {}
        return {k: v for k, v in output.parse(files[name].read_text()).items() if k.startswith(f"{D}/device.")}

    expected = {f"{D}/device.vendor": "acme", f"{D}/device.count": "2", f"{D}/device.model": "Acme-X1",
                f"{D}/device.memory": "2000", f"{D}/device.driver-version": "fake-1.0"}
    wait_until(lambda: node_wide("fake") == node_wide("acme") == expected, what="both files agreeing")
    assert output.parse(files["fake"].read_text())[f"{D}/fake.count"] == "1"
    assert not any(k.startswith(f"{D}/acme.") for k in output.parse(files["fake"].read_text()))
    stamps = {name: (os.stat(path).st_ino, os.stat(path).st_mtime_ns) for name, path in files.items()}
    time.sleep(0.5)  # five intervals of both processes: nothing left to change
    assert {name: (os.stat(path).st_ino, os.stat(path).st_mtime_ns) for name, path in files.items()} == stamps
    assert api.recorded() == []

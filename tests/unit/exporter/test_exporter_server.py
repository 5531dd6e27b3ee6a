"""The HTTP side through run(): routes, /healthz states, keep-alive, the library's negotiation, gzip and
name[] filtering, bad addresses, clean shutdown."""

from __future__ import annotations

import gzip
import http.client
import socket
import subprocess
import sys
import threading
import time

import pytest
from exporter_helpers import RESOURCE, container, pod, response, write_devices

from krakenplug import errors, exporter, settings
from krakenplug.backends.fake import FakeBackend, FakeOptions
from krakenplug.exporter.server import MetricsServer, parse_address
from krakenplug.hub import DeviceHub

NO_APP = lambda environ, start_response: []  # noqa: E731 - binding is all these tests need


def _settings(port: int, pod_socket, **exporter_fields) -> settings.Settings:
    return settings.load(overrides={
        "node_name": "node-http",
        "exporter": {"address": f"127.0.0.1:{port}", "pod_resources_socket": str(pod_socket),
                     "pod_resources_refresh_seconds": 0.5, **exporter_fields},
    })


@pytest.fixture
def running(tmp_path, short_tmp, free_port, clean_env):
    """Starts exporter.run() in a thread on a fake devices file; yields (port, devices file, stop)."""
    devices_file = write_devices(tmp_path / "devices.yaml")
    backend = FakeBackend(FakeOptions(devices_file=devices_file))
    backend.open()
    stop = threading.Event()
    failures: list[Exception] = []

    hub = DeviceHub(backend, poll_seconds=0.1)
    hub.start(stop)

    def serve(config):
        try:
            exporter.run(config, hub, stop)
        except Exception as err:  # noqa: BLE001 - surfaced at teardown
            failures.append(err)

    threads: list[threading.Thread] = []

    def start(pod_socket=None, **fields):
        config = _settings(free_port, pod_socket or short_tmp / "none.sock", **fields)
        threads.append(threading.Thread(target=serve, args=(config,)))
        threads[-1].start()
        _wait_for_port(free_port)
        return free_port, devices_file

    yield start
    stop.set()
    hub.join()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "exporter.run() did not return after stop"
    assert not failures, failures


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def test_routes(running):
    port, _ = running()
    status, headers, body = get(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b'krakenplug_device_util{container="",device_index="0",namespace="",node_name="node-http"' in body
    assert get(port, "/healthz")[::2] == (200, b"ok\n")
    status, headers, body = get(port, "/")
    assert status == 200 and b'href="/metrics"' in body and b'href="/healthz"' in body and b"node-http" in body
    status, _, body = get(port, "/nope")
    assert status == 404 and b"/nope" in body


def test_healthz_turns_503_with_the_reason_and_back(running, monkeypatch):
    monkeypatch.setattr("krakenplug.exporter.app.HEALTH_MAX_AGE_SECONDS", 0.0)
    port, devices_file = running()
    write_devices(devices_file, faults={"sample_error": "ECC storm"})
    # The fake backend's file watcher applies the edit a moment later, as a driver fault would arrive.
    status, _, body = _eventually(lambda: get(port, "/healthz"), lambda answer: answer[0] != 200)
    assert status == 503 and b"last collection failed" in body and b"ECC storm" in body
    assert get(port, "/metrics")[0] == 200  # the page itself stays up
    write_devices(devices_file)
    assert _eventually(lambda: get(port, "/healthz"), lambda answer: answer[0] == 200)[::2] == (200, b"ok\n")


def _eventually(call, done, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not done(answer := call()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return answer


def test_pod_labels_come_from_the_kubelet(running, fake_kubelet):
    fake_kubelet.answer = response(pod("trainer", "ml", container("main", (RESOURCE, ["fake-2"], [0]))))
    port, _ = running(pod_socket=fake_kubelet.socket_path)
    deadline = time.monotonic() + 10
    while b'pod="trainer"' not in (body := get(port, "/metrics")[2]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b'krakenplug_device_util{container="main",device_index="2",namespace="ml",node_name="node-http",' \
           b'pod="trainer",vendor="fake"} 20.0' in body
    assert b"krakenplug_podresources_up 1.0" in body


def test_one_connection_serves_many_scrapes(running):
    port, _ = running()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(3):
            connection.request("GET", "/metrics")
            answer = connection.getresponse()
            assert answer.status == 200 and answer.read()
            assert answer.getheader("Connection") != "close"
    finally:
        connection.close()


def test_stop_does_not_wait_for_idle_connections(free_port, tmp_path, short_tmp, clean_env):
    backend = FakeBackend(FakeOptions(devices_file=write_devices(tmp_path / "d.yaml")))
    backend.open()
    stop = threading.Event()
    hub = DeviceHub(backend)
    hub.refresh()
    thread = threading.Thread(target=exporter.run, args=(_settings(free_port, short_tmp / "x.sock"), hub, stop))
    thread.start()
    _wait_for_port(free_port)
    idle = http.client.HTTPConnection("127.0.0.1", free_port, timeout=10)
    try:
        idle.request("GET", "/healthz")
        assert idle.getresponse().read() == b"ok\n"  # the connection now idles in keep-alive
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "run() waited for an idle keep-alive connection"
    finally:
        idle.close()


def test_scrapes_start_no_threads(running, monkeypatch):
    port, _ = running()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started: list[str] = []
    original_start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        original_start(thread)

    try:
        connection.request("GET", "/metrics")  # the connection's own thread starts here
        connection.getresponse().read()
        monkeypatch.setattr(threading.Thread, "start", counting_start)
        for _ in range(20):
            connection.request("GET", "/metrics")
            assert connection.getresponse().read()
    finally:
        connection.close()
    assert started == []


def test_gzip_when_asked(running):
    port, _ = running()
    status, headers, body = get(port, "/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body).startswith(b"# HELP krakenplug_device_util ")
    status, headers, _ = get(port, "/metrics", {"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in headers


def test_openmetrics_when_asked(running):
    port, _ = running()
    status, headers, body = get(port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n") and b"# TYPE krakenplug_device_util gauge" in body


def test_name_filter_selects_families(running):
    port, _ = running()
    _, _, body = get(port, "/metrics?name[]=krakenplug_device_util&name[]=krakenplug_collector_up")
    names = {line.split(b"{")[0].split(b" ")[0] for line in body.splitlines() if not line.startswith(b"#")}
    assert names == {b"krakenplug_device_util", b"krakenplug_collector_up"}


def test_run_releases_the_port(free_port, tmp_path, short_tmp, clean_env):
    backend = FakeBackend(FakeOptions(devices_file=write_devices(tmp_path / "d.yaml")))
    backend.open()
    hub = DeviceHub(backend)
    hub.refresh()
    for _ in range(2):  # the second run binds the same port again
        stop = threading.Event()
        thread = threading.Thread(target=exporter.run, args=(_settings(free_port, short_tmp / "x.sock"), hub, stop))
        thread.start()
        _wait_for_port(free_port)
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_krakenplug_run_exits_naming_a_taken_address(free_port, clean_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "krakenplug", "run", "--backend", "fake", "--no-plugin", "--no-discovery",
             "--metrics-address", f"127.0.0.1:{free_port}"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert f"exporter.address 127.0.0.1:{free_port}: cannot listen: address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "address already in use" in line] == [
        next(line for line in result.stderr.splitlines() if "cannot listen" in line)]


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:99999", "999.0.0.1:9478", "::1:9478"])
def test_krakenplug_run_refuses_a_bad_address_with_exit_2(address, clean_env):
    result = subprocess.run(
        [sys.executable, "-m", "krakenplug", "run", "--backend", "fake", "--no-plugin", "--no-discovery",
         "--metrics-address", address], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "exporter.address" in result.stderr and repr(address) in result.stderr
    assert "Traceback" not in result.stderr


def test_address_in_use_is_named(free_port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port))
        taken.listen()
        with pytest.raises(errors.ConfigError, match=rf"exporter.address 127.0.0.1:{free_port}: cannot listen: "
                                                     r"address already in use"):
            MetricsServer(f"127.0.0.1:{free_port}", NO_APP)


def test_an_address_of_another_host_is_named():
    with pytest.raises(errors.ConfigError, match=r"exporter.address 192.0.2.1:9478: cannot listen: "
                                                 r"cannot assign requested address"):
        MetricsServer("192.0.2.1:9478", NO_APP)


@pytest.mark.parametrize(("address", "parsed"), [
    ("0.0.0.0:9478", ("0.0.0.0", 9478)),
    (":9478", ("0.0.0.0", 9478)),
    ("[::1]:9478", ("::1", 9478)),
    ("localhost:0", ("localhost", 0)),
], ids=["any", "empty-host", "ipv6", "port-0"])
def test_parse_address(address, parsed):
    assert parse_address(address) == parsed


@pytest.mark.parametrize("address", ["9478", "host:", "host:http", "host:70000", ""],
                         ids=["no-host", "no-port", "named-port", "port-too-big", "empty"])
def test_parse_address_rejects(address):
    with pytest.raises(errors.ConfigError, match=r"exporter.address: expected HOST:PORT, got "):
        parse_address(address)

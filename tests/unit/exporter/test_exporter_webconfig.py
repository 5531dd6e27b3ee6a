"""TLS and basic auth from an exporter-toolkit web config, through exporter.run() on a real socket.

Certificates are made per test module with ``cryptography`` (tests/certificates.py: a CA, a server certificate for 127.0.0.1
and a client certificate); passwords are real bcrypt hashes.
"""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import ssl
import threading
import time
from pathlib import Path

import bcrypt
import pytest
import yaml
from certificates import make_pki
from exporter_helpers import write_devices
from httpcheck import get

from krakenplug import cli, errors, exporter, settings
from krakenplug.backends.fake import FakeBackend, FakeOptions
from krakenplug.exporter import webconfig
from krakenplug.hub import DeviceHub

PASSWORD = "s3cret scrape"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.crt, server.crt/key (127.0.0.1), client.crt/key signed by the CA, and stranger.crt/key (self-signed)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def _web_config(directory: Path, **sections) -> Path:
    path = directory / "web-config.yml"
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.fixture
def run_with(tmp_path, short_tmp, free_port, clean_env):
    """run_with(web_config_path) starts exporter.run(); yields the port."""
    backend = FakeBackend(FakeOptions(devices_file=write_devices(tmp_path / "devices.yaml")))
    backend.open()
    hub = DeviceHub(backend)
    hub.refresh()
    stop = threading.Event()
    threads = []

    def start(web_config: Path) -> int:
        config = settings.load(overrides={"node_name": "node-tls", "exporter": {
            "address": f"127.0.0.1:{free_port}", "pod_resources_socket": str(short_tmp / "none.sock"),
            "web_config_file": str(web_config)}})
        threads.append(threading.Thread(target=exporter.run, args=(config, hub, stop)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", free_port)) == 0:
                    return free_port
            time.sleep(0.02)
        raise AssertionError("the exporter did not listen")

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


def _client_context(pki: Path, *, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        context.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
    return context


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def test_tls_serves_metrics_and_plain_http_is_dropped_in_one_line(pki, run_with, tmp_path, caplog):
    port = run_with(_web_config(tmp_path, tls_server_config={
        "cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key")}))
    status, headers, body = get(port, context=_client_context(pki))
    assert status == 200 and b"krakenplug_device_util{" in body
    with caplog.at_level(logging.INFO, logger="krakenplug.exporter"):
        with pytest.raises((http.client.HTTPException, OSError)):
            get(port)  # plain HTTP to the TLS port
        assert get(port, context=_client_context(pki))[0] == 200  # and the server still serves
    dropped = [r for r in caplog.records if "dropped client" in r.getMessage()]
    assert len(dropped) == 1 and "TLS handshake failed" in dropped[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)


def test_a_silent_client_cannot_hold_the_tls_handshake(pki, run_with, tmp_path):
    port = run_with(_web_config(tmp_path, tls_server_config={
        "cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key")}))
    with socket.create_connection(("127.0.0.1", port)):  # connects, never says hello
        assert get(port, context=_client_context(pki))[0] == 200


def test_client_certificates_are_required_and_verified(pki, run_with, tmp_path):
    for name in ("server.crt", "server.key", "ca.crt"):
        (tmp_path / name).write_bytes((pki / name).read_bytes())
    port = run_with(_web_config(tmp_path, tls_server_config={
        "cert_file": "server.crt", "key_file": "server.key",  # relative to the config file, as exporter-toolkit
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "ca.crt"}))
    assert get(port, context=_client_context(pki, cert="client"))[0] == 200
    for refused in (None, "stranger"):
        with pytest.raises((ssl.SSLError, OSError)):
            get(port, context=_client_context(pki, cert=refused))


def test_basic_auth_guards_everything_but_healthz(run_with, tmp_path):
    port = run_with(_web_config(tmp_path, basic_auth_users={"prometheus": _hash(PASSWORD)},
                                http_server_config={"headers": {"X-Frame-Options": "deny"}}))
    status, headers, _ = get(port)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    assert get(port, auth=("prometheus", "wrong"))[0] == 401
    assert get(port, auth=("nobody", PASSWORD))[0] == 401
    assert get(port, "/", auth=("nobody", PASSWORD))[0] == 401
    status, headers, body = get(port, auth=("prometheus", PASSWORD))
    assert status == 200 and b"krakenplug_device_util{" in body and headers["X-Frame-Options"] == "deny"
    assert get(port, "/healthz")[0] == 200  # the kubelet's probe carries no password


def test_a_matching_password_is_checked_with_bcrypt_once():
    auth = webconfig.BasicAuth({"prometheus": _hash(PASSWORD)})
    header = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    assert auth.check(header)
    calls = []
    original = bcrypt.checkpw
    try:
        bcrypt.checkpw = lambda *args: calls.append(args) or original(*args)
        assert auth.check(header) and calls == []  # Prometheus sends the same credentials every scrape
        assert not auth.check("Basic " + base64.b64encode(b"prometheus:wrong").decode()) and len(calls) == 1
    finally:
        bcrypt.checkpw = original
    for malformed in (None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        assert not auth.check(malformed)


def test_a_rotated_certificate_is_picked_up_and_a_broken_file_keeps_the_last_good(pki, tmp_path, caplog):
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_bytes((pki / name).read_bytes())
    path = _web_config(tmp_path, tls_server_config={"cert_file": "server.crt", "key_file": "server.key"})
    now = [0.0]
    source = webconfig.WebConfigSource(path, clock=lambda: now[0])
    first = source.current()
    assert first.ssl_context is not None and first.auth is None
    _web_config(tmp_path, tls_server_config={"cert_file": "server.crt", "key_file": "server.key"},
                basic_auth_users={"prometheus": _hash(PASSWORD)})
    now[0] += 2
    assert source.current().auth is not None
    path.write_text("tls_server_config: [not, a, mapping]\n")
    now[0] += 2
    with caplog.at_level(logging.ERROR):
        kept = source.current()
        now[0] += 2
        assert source.current() is kept
    assert kept.auth is not None
    assert len([r for r in caplog.records if "keeping the previous web config" in r.getMessage()]) == 1


@pytest.mark.parametrize(("sections", "message"), [
    ({"tls_server_config": {"cert_file": "a.crt", "key_file": "a.key", "client_auth_type": "RequireAnyClientCert"}},
     "tls_server_config.client_auth_type: Value error, RequireAnyClientCert (a client certificate without "
     "verification) is not supported"),
    ({"tls_server_config": {"cert_file": "a.crt", "key_file": "a.key", "client_auth_type": "Sometimes"}},
     "tls_server_config.client_auth_type: Value error, expected one of NoClientCert"),
    ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}},
     "tls_server_config.cert_file"),
    ({"tls_server_config": {"cert_file": "a.crt", "key_file": "a.key", "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}},
     "tls_server_config.cipher_suites: Extra inputs are not permitted"),
    ({"basic_auth_users": {"prometheus": "plaintext"}}, "user 'prometheus': expected a bcrypt hash"),
    ({"tls_server_config": {"cert_file": "a.crt", "key_file": "a.key", "min_version": "TLS99"}},
     "tls_server_config.min_version"),
], ids=["unverified-client-cert", "unknown-client-auth", "missing-cert", "go-only-field", "plain-password",
        "bad-version"])
def test_a_bad_web_config_names_the_file_and_field(tmp_path, sections, message):
    path = _web_config(tmp_path, **sections)
    with pytest.raises(errors.ConfigError) as raised:
        webconfig.load(path)
    assert str(raised.value).startswith(f"exporter.web_config_file {path}: ")
    assert message in str(raised.value)


def test_verify_if_given_needs_a_ca(pki, tmp_path):
    path = _web_config(tmp_path, tls_server_config={
        "cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key"),
        "client_auth_type": "VerifyClientCertIfGiven"})
    with pytest.raises(errors.ConfigError, match="client_ca_file is required with client_auth_type "
                                                 "VerifyClientCertIfGiven"):
        webconfig.load(path)


def test_the_web_config_file_flag_of_krakenplug_run(tmp_path, clean_env):
    flag = _web_config(tmp_path, basic_auth_users={"prometheus": _hash(PASSWORD)})
    args = cli.build_parser().parse_args(["run", "--backend", "fake", "--web-config-file", str(flag)])
    assert cli.load_settings(args).exporter.web_config_file == flag
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"version": "v1", "exporter": {"web_config_file": "/etc/elsewhere.yml"}}))
    args = cli.build_parser().parse_args(["run", "--config", str(config), "--web-config-file", str(flag)])
    assert cli.load_settings(args).exporter.web_config_file == flag  # the flag wins over the config file
    args = cli.build_parser().parse_args(["run", "--config", str(config)])
    assert cli.load_settings(args).exporter.web_config_file == Path("/etc/elsewhere.yml")


def test_krakenplug_run_help_shows_the_web_config_file_flag(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--help"])
    assert "--web-config-file FILE" in capsys.readouterr().out

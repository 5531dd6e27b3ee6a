"""A real Prometheus scrapes the real agent over TLS with a client certificate and basic auth.

The web config is exporter-toolkit's format and Prometheus is a Go client with its own TLS stack, so
this checks the exporter against what a cluster's Prometheus really does: OpenMetrics negotiation,
gzip, TLS 1.2+ with client-certificate verification, and basic auth, all at once.
"""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest
import yaml
from certificates import make_pki

pytestmark = pytest.mark.e2e

PASSWORD = "scrape-me"


def test_prometheus_scrapes_over_tls_with_client_cert_and_basic_auth(tmp_path: Path, start_prometheus,
                                                                      start_agent, metrics_port):
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    web_config = tmp_path / "web-config.yml"
    web_config.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key"),
                              "client_auth_type": "RequireAndVerifyClientCert",
                              "client_ca_file": str(pki / "ca.crt")},
        "basic_auth_users": {"prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()},
    }))
    agent = start_agent("--no-plugin", "--exporter", "--metrics-address", f"127.0.0.1:{metrics_port}",
                        config={"exporter": {"web_config_file": str(web_config)}})
    tls = {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "client.crt"), "key_file": str(pki / "client.key")}
    prometheus = start_prometheus(scheme="https", tls_config=tls,
                                  basic_auth={"username": "prometheus", "password": PASSWORD})
    result = prometheus.wait_for("krakenplug_device_util", lambda r: len(r) == 4, what="four devices over TLS")
    assert sorted(float(s["value"][1]) for s in result) == [0.0, 5.0, 37.5, 91.0]
    assert [s["value"][1] for s in prometheus.query('up{job="krakenplug"}')] == ["1"]
    assert "Traceback" not in agent.log()


def test_a_wrong_password_is_refused_and_the_target_is_down(tmp_path: Path, start_prometheus, start_agent,
                                                            metrics_port):
    web_config = tmp_path / "web-config.yml"
    web_config.write_text(yaml.safe_dump({
        "basic_auth_users": {"prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()}}))
    # the command-line flag this time (the test above sets exporter.web_config_file in the config file)
    start_agent("--no-plugin", "--exporter", "--metrics-address", f"127.0.0.1:{metrics_port}",
                "--web-config-file", str(web_config))
    prometheus = start_prometheus(basic_auth={"username": "prometheus", "password": "guess"})
    prometheus.wait_for('up{job="krakenplug"}', lambda r: bool(r) and r[0]["value"][1] == "0",
                        what="the target down with a wrong password")
    assert prometheus.query("krakenplug_device_util") == []

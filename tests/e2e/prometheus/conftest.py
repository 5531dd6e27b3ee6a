"""Fixtures for the Prometheus end-to-end tests: a real Prometheus on loopback scraping the agent.

Prometheus runs with a 1 s scrape interval; tests read what it stored through its HTTP query API.
Prometheus delays its first scrape after start-up (about 5.5 s), hence the generous waits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from httpcheck import free_port

WAIT = 30.0


class Prometheus:
    def __init__(self, port: int, log_path: Path) -> None:
        self.port, self.log_path = port, log_path

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, predicate: Callable[[list[dict]], bool], *, what: str) -> list[dict]:
        deadline, result = time.monotonic() + WAIT, []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.25)
        raise AssertionError(f"{what}: not seen within {WAIT} s; last answer to {promql!r}: {result}\n"
                             f"prometheus log:\n{self.log_path.read_text(errors='replace')}")


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def start_prometheus(tmp_path: Path, metrics_port: int) -> Iterator[Callable[..., Prometheus]]:
    """start_prometheus(**scrape_settings) runs Prometheus scraping the agent (e.g. scheme, tls_config)."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("prometheus is required for this test (apt-get install prometheus)")
    processes: list[subprocess.Popen] = []

    def start(**scrape_settings: Any) -> Prometheus:
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "krakenplug", **scrape_settings,
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }))
        port, log_path = free_port(), tmp_path / "prometheus.log"
        with open(log_path, "wb") as log:
            processes.append(subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
        server = Prometheus(port, log_path)
        _wait_ready(server, processes[-1])
        return server

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def prometheus(start_prometheus: Callable[..., Prometheus]) -> Prometheus:
    return start_prometheus()


def _wait_ready(server: Prometheus, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited with {process.returncode}:\n{server.log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"prometheus not ready within {WAIT} s:\n{server.log_path.read_text()}")



"""Fixtures for discovery tests: the API stand-in, fake backends driven by device files, a runner."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from krakenplug import discovery, settings
from krakenplug.backends import fake
from krakenplug.testing.polling import poll_until

from .apiserver import FakeApiServer

NODE = "node-a"
DOMAIN = "krakenplug.pcl.ac.cn"


def wait_until(predicate: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Polls ``predicate`` until it is truthy; fails the test after a generous timeout."""
    try:
        return poll_until(predicate, timeout=timeout, interval=0.02, what=what)
    except TimeoutError as err:
        raise AssertionError(str(err)) from None


def ours(labels: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in labels.items() if key.startswith(f"{DOMAIN}/")}


def write_devices(path: Path, devices: list[tuple[str, str, int]]) -> Path:
    """(id, model, memory_mb) triples as a fake-backend device file, replaced atomically."""
    spec = {"devices": [{"id": ident, "model": model, "memory_mb": memory} for ident, model, memory in devices]}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(yaml.safe_dump(spec, allow_unicode=True))
    os.replace(temporary, path)
    return path


def make_backend(path: Path, *, name: str = "fake") -> fake.FakeBackend:
    """The real fake backend over ``path``; another ``name`` stands for a second vendor's DaemonSet."""
    cls = fake.FakeBackend if name == "fake" else type(f"{name}Backend", (fake.FakeBackend,), {"name": name})
    backend = cls(fake.FakeOptions(devices_file=path, watch_interval_seconds=0.02))
    backend.open()
    return backend


def make_settings(*, kubeconfig: Path | None, features_file: Path | None = None,
                  **discovery_fields: Any) -> settings.Settings:
    fields = {
        "enabled": True, "interval_seconds": 0.3, "kubeconfig": kubeconfig,
        "features_file": features_file, "retry_initial_seconds": 0.05, "retry_max_seconds": 0.2,
        "api_timeout_seconds": 0.5, **discovery_fields,
    }
    return settings.load(overrides={"node_name": NODE, "backend": "fake", "discovery": fields,
                                    "plugin": {"rescan_interval_seconds": 0.03}})


@pytest.fixture
def api(clean_env: None) -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def kubeconfig(api: FakeApiServer, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def no_cluster(clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not inside a pod, no KUBECONFIG and no ~/.kube/config: no cluster configuration can be found."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def run_discovery(run_component: Callable[..., threading.Event]) -> Callable[..., threading.Event]:
    """Starts ``discovery.run`` in a thread; every started run is stopped and joined at teardown."""
    def start(config: settings.Settings, backend: fake.FakeBackend) -> threading.Event:
        return run_component(discovery.run, config, backend, poll_seconds=config.plugin.rescan_interval_seconds,
                             name=f"discovery-{backend.name}")

    return start

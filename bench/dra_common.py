"""Shared pieces of the DRA benchmarks: a real ``krakenplug run --allocation-mode dra`` process against the
resource.k8s.io stand-in and the kubelet DRA stand-in, in a private directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from krakenplug.testing.dra_api import ResourceApiServer
from krakenplug.testing.dra_kubelet import DraKubelet

DRIVER = "fake.krakenplug.pcl.ac.cn"
NODE = "bench-node"


@dataclass
class DraNode:
    root: Path
    api: ResourceApiServer
    kubelet: DraKubelet
    devices_file: Path

    @property
    def endpoint(self) -> str:
        return self.kubelet.drivers[DRIVER].endpoint


@contextlib.contextmanager
def dra_agent(directory: Path, devices_file: Path, **dra_fields: object) -> Iterator[DraNode]:
    """The agent in DRA mode, registered and with its slices published; stopped with SIGTERM afterwards.
    ``dra_fields`` go into the config's ``dra`` section (e.g. ``watch_claims=True``)."""
    with ResourceApiServer() as api, DraKubelet(directory / "registry", health_retry_seconds=0.2) as kubelet:
        config = {"version": "v1", "cdi_dir": str(directory / "cdi"),
                  "dra": {"allocation_mode": "dra", "registry_dir": str(directory / "registry"),
                          "plugins_dir": str(directory / "plugins"),
                          "kubeconfig": str(api.write_kubeconfig(directory / "kubeconfig")), **dra_fields}}
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "krakenplug", "run", "--backend", "fake", "--node-name", NODE,
                   "--fake-devices", str(devices_file), "--config", str(directory / "config.yaml"),
                   "--no-exporter", "--no-discovery", "--log-level", "warning"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KRAKENPLUG_")}
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        try:
            kubelet.wait_for(lambda k: DRIVER in k.drivers, timeout=30)
            api.wait_for(lambda a: a.devices(driver=DRIVER), timeout=30)
            yield DraNode(directory, api, kubelet, devices_file)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                _, errors = process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                _, errors = process.communicate()
            if process.returncode not in (0, -signal.SIGTERM):
                print(f"agent exited with {process.returncode}:\n{errors}", file=sys.stderr)

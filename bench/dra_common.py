"""Shared pieces of the DRA benchmarks: a real ``krakenplug run --allocation-mode dra`` process against the
resource.k8s.io stand-in and the kubelet DRA stand-in, in a private directory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from _common import agent_process

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
        with agent_process(["--node-name", NODE, "--fake-devices", str(devices_file),
                            "--config", str(directory / "config.yaml"), "--no-exporter", "--no-discovery",
                            "--log-level", "warning"]):
            kubelet.wait_for(lambda k: DRIVER in k.drivers, timeout=30)
            api.wait_for(lambda a: a.slice_devices(driver=DRIVER), timeout=30)
            yield DraNode(directory, api, kubelet, devices_file)

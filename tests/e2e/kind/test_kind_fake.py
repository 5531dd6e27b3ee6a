"""The chart on a real cluster: kind, the fake backend, and the image built from this repository.

Needs a Docker host with ``docker``, ``kind``, ``kubectl`` and helm (``ci/get-helm.sh``); skips with the
reason otherwise. ``.github/workflows/kind-e2e.yaml`` runs it in GitHub Actions. Knobs (environment):
``KRAKENPLUG_E2E_IMAGE`` (default ``krakenplug:e2e``), ``KRAKENPLUG_E2E_SKIP_BUILD=1`` to use an image
built beforehand, ``KRAKENPLUG_E2E_CLUSTER`` to reuse an existing kind cluster (it is then kept), and
``KRAKENPLUG_E2E_KEEP=1`` to keep the cluster this suite creates.

The steps run in order and share one cluster: install -> capacity -> a pod gets a device -> metrics
name that pod -> upgrade to 2 replicas doubles capacity -> uninstall empties allocatable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.kind, pytest.mark.slow]  # e2e: `-m "not e2e"` leaves it out

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "charts" / "krakenplug"
VALUES = REPO_ROOT / "values" / "fake-kind.yaml"
RESOURCE = "krakenplug.pcl.ac.cn/fake"
VENDOR_LABEL = "krakenplug.pcl.ac.cn/device.vendor"
NAMESPACE = "krakenplug"
RELEASE = "kp"
DEVICES_IN_VALUES = 2  # values/fake-kind.yaml simulates two devices
WAIT = 240.0


def _helm_binary() -> str | None:
    configured = os.environ.get("HELM")
    if configured:
        return shutil.which(configured)
    local = REPO_ROOT / ".tools" / "helm4" / "helm" / "helm"
    return str(local) if os.access(local, os.X_OK) else shutil.which("helm")


def _missing_tools() -> list[str]:
    missing = [tool for tool in ("docker", "kind", "kubectl") if shutil.which(tool) is None]
    if _helm_binary() is None:
        missing.append("helm (run ci/get-helm.sh)")
    if "docker" not in missing:
        probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60, check=False)
        if probe.returncode != 0:
            missing.append("a running Docker engine (`docker info` failed)")
    return missing


@dataclass
class Cluster:
    name: str
    kubeconfig: Path
    image: str
    helm: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(self, *cmd: str, timeout: float = 300, check: bool = True, stdin: str | None = None) -> str:
        result = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env(), timeout=timeout,
                                input=stdin, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def kubectl(self, *args: str, **kwargs: Any) -> str:
        return self.run("kubectl", *args, **kwargs)

    def helm_cmd(self, *args: str, **kwargs: Any) -> str:
        return self.run(self.helm, *args, **kwargs)

    def node(self) -> dict:
        nodes = json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"]
        return next(n for n in nodes if n["metadata"].get("labels", {}).get(VENDOR_LABEL) == "fake")

    def resource(self, field: str) -> int:
        return int(self.node()["status"].get(field, {}).get(RESOURCE, "0"))

    def wait_for(self, what: str, check: Callable[[], bool], *, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except AssertionError:
                pass
            time.sleep(2)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        parts = [self.kubectl("get", "pods", "-A", "-o", "wide", check=False),
                 self.kubectl("-n", NAMESPACE, "describe", "daemonsets", check=False),
                 self.kubectl("-n", NAMESPACE, "logs", "-l", "app.kubernetes.io/component=agent", "--tail=80",
                              check=False)]
        return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = _missing_tools()
    if missing:
        pytest.skip("the kind suite needs a Docker host; missing: " + ", ".join(missing))
    image = os.environ.get("KRAKENPLUG_E2E_IMAGE", "krakenplug:e2e")
    if os.environ.get("KRAKENPLUG_E2E_SKIP_BUILD") != "1":
        subprocess.run(["docker", "build", "-t", image, "--build-arg", "GIT_COMMIT=e2e", str(REPO_ROOT)],
                       check=True, timeout=1800)
    reuse = os.environ.get("KRAKENPLUG_E2E_CLUSTER")
    name = reuse or f"kp-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    if reuse:
        subprocess.run(["kind", "export", "kubeconfig", "--name", name, "--kubeconfig", str(kubeconfig)],
                       check=True, timeout=60)
    else:
        subprocess.run(["kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig),
                        "--wait", "180s"], check=True, timeout=600)
    try:
        subprocess.run(["kind", "load", "docker-image", image, "--name", name], check=True, timeout=600)
        result = Cluster(name, kubeconfig, image, _helm_binary())
        node = json.loads(result.kubectl("get", "nodes", "-o", "json"))["items"][0]["metadata"]["name"]
        result.kubectl("label", "node", node, f"{VENDOR_LABEL}=fake", "--overwrite")
        yield result
    finally:
        if not reuse and os.environ.get("KRAKENPLUG_E2E_KEEP") != "1":
            subprocess.run(["kind", "delete", "cluster", "--name", name], timeout=300, check=False)


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Cluster:
    repository, _, tag = cluster.image.rpartition(":")
    cluster.helm_cmd("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                     "-f", str(VALUES), "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                     "--set", "image.pullPolicy=Never", "--wait", "--timeout", "5m", timeout=420)
    return cluster


def test_install_advertises_the_fake_devices(installed: Cluster) -> None:
    installed.wait_for(f"{DEVICES_IN_VALUES} x {RESOURCE} allocatable",
                       lambda: installed.resource("allocatable") == DEVICES_IN_VALUES)
    assert installed.resource("capacity") == DEVICES_IN_VALUES
    daemonsets = json.loads(installed.kubectl("-n", NAMESPACE, "get", "daemonsets", "-o", "json"))["items"]
    assert [ds["metadata"]["name"] for ds in daemonsets] == [f"{RELEASE}-krakenplug-fake"]


WORKLOAD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
spec:
  restartPolicy: Never
  tolerations: [{{operator: Exists}}]
  containers:
    - name: main
      image: {image}
      imagePullPolicy: Never
      command: ["sh", "-c"]
      args: ["echo VISIBLE=$KRAKENPLUG_VISIBLE_DEVICES; ls /dev | grep krakenplug-fake; sleep 3600"]
      resources:
        limits:
          {resource}: 1
"""


@pytest.fixture(scope="module")
def workload(installed: Cluster) -> Iterator[str]:
    name = "device-user"
    manifest = WORKLOAD.format(name=name, namespace=NAMESPACE, image=installed.image, resource=RESOURCE)
    installed.kubectl("apply", "-f", "-", stdin=manifest)
    installed.kubectl("-n", NAMESPACE, "wait", f"pod/{name}", "--for=condition=Ready", "--timeout=180s", timeout=240)
    yield name
    installed.kubectl("-n", NAMESPACE, "delete", "pod", name, "--wait=true", "--timeout=120s", check=False)


def test_a_pod_gets_one_device_with_its_env_and_device_node(installed: Cluster, workload: str) -> None:
    def logged() -> bool:
        return "VISIBLE=" in installed.kubectl("-n", NAMESPACE, "logs", workload)

    installed.wait_for("the workload's output", logged, timeout=60)
    lines = installed.kubectl("-n", NAMESPACE, "logs", workload).split()
    visible = next(line for line in lines if line.startswith("VISIBLE=")).removeprefix("VISIBLE=")
    assert visible in ("fake-0", "fake-1")
    device_nodes = [line for line in lines if line.startswith("krakenplug-fake")]
    assert len(device_nodes) == 1
    assert device_nodes[0] in ("krakenplug-fake0", "krakenplug-fake1")
    assert installed.resource("allocatable") == DEVICES_IN_VALUES


def _agent_pod(cluster: Cluster) -> str:
    pods = json.loads(cluster.kubectl("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=agent",
                                      "-o", "json"))["items"]
    running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
    assert running, "no running agent pod"
    return running[0]


def _metrics(cluster: Cluster) -> str:
    # Through the API server's pod proxy: no port-forward process to manage.
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/{_agent_pod(cluster)}:9478/proxy/metrics"
    return cluster.kubectl("get", "--raw", path)


def test_metrics_report_the_devices_and_the_pod_that_holds_one(installed: Cluster, workload: str) -> None:
    def attributed() -> bool:
        return f'pod="{workload}"' in _metrics(installed)

    installed.wait_for(f"a metric naming pod {workload}", attributed, timeout=120)
    text = _metrics(installed)
    util = [line for line in text.splitlines() if line.startswith("krakenplug_device_util{")]
    assert len(util) == DEVICES_IN_VALUES
    assert all('vendor="fake"' in line for line in util)
    assert any(f'pod="{workload}"' in line and f'namespace="{NAMESPACE}"' in line for line in util)
    assert any(line.startswith("krakenplug_collector_up") and line.endswith(" 1.0") for line in text.splitlines())


def test_upgrade_to_two_replicas_doubles_the_capacity(installed: Cluster, workload: str) -> None:
    installed.helm_cmd("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
                       "--set", "vendors.fake.plugin.replicas=2", "--wait", "--timeout", "5m", timeout=420)
    installed.wait_for(f"{2 * DEVICES_IN_VALUES} x {RESOURCE} allocatable",
                       lambda: installed.resource("allocatable") == 2 * DEVICES_IN_VALUES)


def test_uninstall_removes_the_agents_and_the_devices(installed: Cluster, workload: str) -> None:
    installed.kubectl("-n", NAMESPACE, "delete", "pod", workload, "--wait=true", "--timeout=120s")
    installed.helm_cmd("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m", timeout=420)
    assert json.loads(installed.kubectl("-n", NAMESPACE, "get", "daemonsets", "-o", "json"))["items"] == []
    # The kubelet keeps the capacity for a grace period but stops offering the devices at once.
    installed.wait_for(f"{RESOURCE} allocatable to drop to 0", lambda: installed.resource("allocatable") == 0)

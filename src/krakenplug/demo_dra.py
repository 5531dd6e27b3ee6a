"""``krakenplug demo --dra``: the DRA driver on one machine, no cluster, no accelerator.

It starts the resource.k8s.io API stand-in and the kubelet DRA stand-in in a temporary directory, runs a
real ``krakenplug run --allocation-mode dra`` process on the fake backend against them, and shows the
published ResourceSlice, a claim allocated (by the stand-in scheduler) and prepared, its CDI spec, and
a device turning Unhealthy as a slice taint and on the health stream. Everything is stopped and
removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from krakenplug.testing.dra_api import ResourceApiServer
from krakenplug.testing.dra_kubelet import DraKubelet
from krakenplug.testing.errors import PluginCallError
from krakenplug.testing.fake_devices import set_health
from krakenplug.testing.polling import poll_until

DRIVER = "fake.krakenplug.pcl.ac.cn"
NODE = "demo-node"
DOMAIN = "krakenplug.pcl.ac.cn"
WAIT_SECONDS = 20.0

T = TypeVar("T")


class DemoError(Exception):
    """A demo step failed; the message says which and why."""


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="kp-dra-", dir="/tmp"))  # short: unix socket paths
    agent: subprocess.Popen[bytes] | None = None
    failure = None
    try:
        with ResourceApiServer() as api, DraKubelet(workdir / "registry", health_retry_seconds=0.5) as kubelet:
            agent = _start_agent(workdir, api)
            _steps(workdir, api, kubelet, agent)
            status = _stop(agent)
            agent = None
            if status != 0:
                failure = f"the agent exited with status {status} on SIGTERM"
    except (DemoError, PluginCallError, OSError, LookupError) as err:
        failure = f"{err}\nlast lines of the agent log:\n{_tail(workdir / 'agent.log')}"
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        if agent is not None:
            _stop(agent)
        shutil.rmtree(workdir, ignore_errors=True)
    if failure is not None:
        print(f"\ndemo failed: {failure}", file=sys.stderr)
        return 1
    print("\nDone: agent stopped cleanly, sockets and temporary files removed.")
    return 0


def _start_agent(workdir: Path, api: ResourceApiServer) -> subprocess.Popen[bytes]:
    devices = workdir / "fake-devices.yaml"
    devices.write_text(resources.files("krakenplug").joinpath("data/fake-devices.yaml").read_text())
    config = {"version": "v1", "cdi_dir": str(workdir / "cdi"),
              "dra": {"allocation_mode": "dra", "registry_dir": str(workdir / "registry"),
                      "plugins_dir": str(workdir / "plugins"),
                      "kubeconfig": str(api.write_kubeconfig(workdir / "kubeconfig"))}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {key: value for key, value in os.environ.items() if not key.startswith("KRAKENPLUG_")}
    argv = [sys.executable, "-m", "krakenplug", "run", "--backend", "fake", "--node-name", NODE,
            "--fake-devices", str(devices), "--config", str(workdir / "config.yaml"), "--no-exporter",
            "--no-discovery"]
    print("KrakenPlug DRA demo: API server + kubelet stand-ins, `krakenplug run --allocation-mode dra` (fake backend)")
    print(f"  work dir {workdir}")
    with open(workdir / "agent.log", "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _steps(workdir: Path, api: ResourceApiServer, kubelet: DraKubelet, agent: subprocess.Popen[bytes]) -> None:
    def wait(what: str, predicate: Callable[[], T]) -> T:
        def ready() -> T:
            if agent.poll() is not None:
                raise DemoError(f"the agent exited with status {agent.returncode} while waiting for {what}")
            return predicate()

        try:
            return poll_until(ready, timeout=WAIT_SECONDS, interval=0.05, what=what)
        except TimeoutError as err:
            raise DemoError(str(err)) from None

    wait("the kubelet registration", lambda: DRIVER in kubelet.drivers)
    (registration,) = [r for r in kubelet.registrations if r.accepted][:1]
    slices = wait("the ResourceSlice", lambda: api.slices(driver=DRIVER))
    _section("Registered with the kubelet")
    print(f"  {registration.info.type} {registration.info.name}, versions {', '.join(registration.info.supported_versions)}")
    print(f"  endpoint {registration.info.endpoint}")
    _section(f"ResourceSlice {slices[0]['metadata']['name']} (pool {NODE}, generation "
             f"{slices[0]['spec']['pool']['generation']})")
    for device in slices[0]["spec"]["devices"]:
        print(f"  {device['name']}: {_attributes(device)}")

    claim = api.allocate("demo", "trainer", driver=DRIVER, node=NODE, count=2,
                         pick=lambda d: d["attributes"][f"{DOMAIN}/numaNode"]["int"] == 0)
    uid = claim["metadata"]["uid"]
    answer = kubelet.prepare(DRIVER, [("demo", uid, "trainer")])[uid]
    if answer.error:
        raise DemoError(f"NodePrepareResources failed: {answer.error}")
    _section("Claim demo/trainer: 2 devices on NUMA node 0, allocated and prepared")
    for device in answer.devices:
        print(f"  {device.device_name} (request {', '.join(device.request_names)}) -> {', '.join(device.cdi_device_ids)}")
    spec_path = workdir / "cdi" / f"{DRIVER}_claim_{uid}.json"
    print(f"  CDI spec {spec_path.name}:")
    for line in json.dumps(json.loads(spec_path.read_text()), indent=2).splitlines():
        print(f"    {line}")

    _section("Fault injection: fake-3 turns Unhealthy in the devices file, then recovers")
    set_health(workdir / "fake-devices.yaml", "fake-3", "Unhealthy")
    wait("the taint", lambda: api.slice_devices(driver=DRIVER)["fake-3"].get("taints"))
    wait("the health stream", lambda: kubelet.health(DRIVER).get("fake-3") == "UNHEALTHY")
    taint = api.slice_devices(driver=DRIVER)["fake-3"]["taints"][0]
    print(f"  slice taint     {taint['key']}={taint['value']}:{taint['effect']}")
    print(f"  health stream   fake-3 {kubelet.health(DRIVER)['fake-3']}")
    set_health(workdir / "fake-devices.yaml", "fake-3", "Healthy")
    wait("the taint to clear", lambda: not api.slice_devices(driver=DRIVER)["fake-3"].get("taints"))
    wait("the health stream", lambda: kubelet.health(DRIVER).get("fake-3") == "HEALTHY")
    print(f"  recovered       no taint, health stream fake-3 {kubelet.health(DRIVER)['fake-3']}")

    unprepared = kubelet.unprepare(DRIVER, [("demo", uid, "trainer")])[uid]
    _section("Claim demo/trainer unprepared")
    print(f"  error {unprepared.error or 'none'}, CDI spec removed: {not spec_path.exists()}")
    print(f"  API writes so far: {len(api.writes())} (only on changes)")


def _attributes(device: dict[str, Any]) -> str:
    shown = []
    for name, value in device["attributes"].items():
        short = name.removeprefix(f"{DOMAIN}/").removeprefix("resource.kubernetes.io/")
        shown.append(f"{short}={next(iter(value.values()))}")
    memory = device["capacity"][f"{DOMAIN}/memory"]["value"]
    return ", ".join(shown + [f"memory={memory}"])


def _stop(agent: subprocess.Popen[bytes]) -> int:
    if agent.poll() is None:
        agent.terminate()
    try:
        return agent.wait(timeout=15)
    except subprocess.TimeoutExpired:
        agent.kill()
        return agent.wait()


def _section(title: str) -> None:
    print(f"\n== {title}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

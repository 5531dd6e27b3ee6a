"""NVIDIA MIG as partitionable devices, through the real ``krakenplug run --backend nvidia`` on the fake NVML:
the MIG-enabled GPU is published whole and as its MIG devices, sharing one counter set, so the stand-in
scheduler never hands out the GPU together with one of its MIG devices; a claim on the whole GPU gets
every MIG device of it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from krakenplug import resource_names as names
from krakenplug.testing.dra_api import ResourceApiServer, pool_counter_problems
from krakenplug.testing.dra_kubelet import DraKubelet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vendors"))
from vendors import NVML, WAIT, _load, backend_flags, fake_host, fixture_values  # noqa: E402

pytestmark = pytest.mark.e2e
fakenvml = _load("fakenvml")

DRIVER = "nvidia.krakenplug.pcl.ac.cn"
NODE = "e2e-node"
UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-000000000000"
MIG_A, MIG_B = "MIG-aaaaaaaa-0000-5000-8000-000000000001", "MIG-aaaaaaaa-0000-5000-8000-000000000002"
DEVICE_NODES = ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"]


@pytest.fixture(scope="module")
def libnvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return NVML.build(tmp_path_factory.mktemp("nvml"))


@pytest.fixture
def api() -> Iterator[ResourceApiServer]:
    with ResourceApiServer() as server:
        yield server


def test_a_mig_gpu_and_its_mig_devices_are_never_both_allocated(node, start_agent, libnvml: Path,
                                                               api: ResourceApiServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    host = fake_host(node.root, DEVICE_NODES, {"0000:3b:00.0": 0, "0000:d8:00.0": 1})
    proc = node.root / "proc"
    fakenvml.add_mig_capabilities(host.dev, proc, 0, 1, 0, (12, 13))
    fakenvml.add_mig_capabilities(host.dev, proc, 0, 9, 0, (84, 85))
    gpu0 = fakenvml.mig_fields((0, MIG_A, 1, 0, fakenvml.PROFILE_3G), (1, MIG_B, 9, 0, fakenvml.PROFILE_1G))
    NVML.fixture(node.root / "nvml.fixture", fixture_values([
        fakenvml.h100(UUID0, "0000:3b:00.0", 0, **gpu0), fakenvml.h100(UUID1, "0000:d8:00.0", 1, mig_mode=0)]),
        monkeypatch)
    config = {"cdi_dir": str(node.root / "cdi"),
              "dra": {"allocation_mode": "dra", "registry_dir": str(node.root / "registry"),
                      "plugins_dir": str(node.root / "plugins"), "sysfs_root": str(host.sysfs),
                      "kubeconfig": str(api.write_kubeconfig(node.root / "kubeconfig"))}}
    whole, mig_a, mig_b, plain = (names.dns_label(i) for i in (UUID0, MIG_A, MIG_B, UUID1))
    with DraKubelet(node.root / "registry") as kubelet:
        start_agent(*backend_flags("nvidia", host, library_path=libnvml, proc_root=proc, mig_strategy="mixed"),
                    config=config)
        api.wait_for(lambda a: len(a.slice_devices(driver=DRIVER)) == 4, timeout=WAIT)
        kubelet.wait_for(lambda k: DRIVER in k.drivers, timeout=WAIT)
        published = api.slices(driver=DRIVER)
        assert pool_counter_problems(published) == []
        (counters,) = [s["spec"]["sharedCounters"] for s in published if "sharedCounters" in s["spec"]]
        assert [c["counters"]["partitions"] for c in counters] == [{"value": "2"}]
        devices = api.slice_devices(driver=DRIVER)
        assert set(devices) == {whole, mig_a, mig_b, plain}
        assert devices[mig_a]["attributes"]["krakenplug.pcl.ac.cn/parent"] == {"string": whole}
        assert "consumesCounters" not in devices[plain]

        claim = api.allocate("team", "gpu", driver=DRIVER, node=NODE, pick=lambda d: d["name"] == whole)
        with pytest.raises(LookupError):
            api.allocate("team", "slice", driver=DRIVER, node=NODE, pick=lambda d: d["name"] in (mig_a, mig_b))
        uid = claim["metadata"]["uid"]
        answer = kubelet.prepare(DRIVER, [("team", uid, "gpu")])[uid]
        assert answer.error == "" and [d.device_name for d in answer.devices] == [whole]
        spec = json.loads((node.root / "cdi" / f"{DRIVER}_claim_{uid}.json").read_text())
        edits = spec["devices"][0]["containerEdits"]
        assert f"NVIDIA_VISIBLE_DEVICES={MIG_A},{MIG_B}" in edits["env"]
        assert {n["path"] for n in edits["deviceNodes"]} >= {
            "/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap13",
            "/dev/nvidia-caps/nvidia-cap84", "/dev/nvidia-caps/nvidia-cap85"}
        assert kubelet.unprepare(DRIVER, [("team", uid, "gpu")])[uid].error == ""
        api.delete_claim("team", "gpu")

        api.allocate("team", "slice", driver=DRIVER, node=NODE, pick=lambda d: d["name"] == mig_a)
        with pytest.raises(LookupError):
            api.allocate("team", "gpu", driver=DRIVER, node=NODE, pick=lambda d: d["name"] == whole)
        api.allocate("team", "other-slice", driver=DRIVER, node=NODE, pick=lambda d: d["name"] == mig_b)

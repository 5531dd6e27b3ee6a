"""``krakenplug demo --dra`` runs as printed in the README and shows every step."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_dra_shows_slice_claim_cdi_and_taint() -> None:
    result = subprocess.run([sys.executable, "-m", "krakenplug", "demo", "--dra"], capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for expected in ("DRAPlugin fake.krakenplug.pcl.ac.cn, versions v1.DRAPlugin, v1beta1.DRAPlugin",
                     "== ResourceSlice demo-node-fake.krakenplug.pcl.ac.cn-0",
                     "fake-0: vendor=fake, model=KrakenSim-80G", "numaNode=0", "memory=80Gi",
                     "fake.krakenplug.pcl.ac.cn/claim=", '"KRAKENPLUG_VISIBLE_DEVICES=fake-0,fake-1"',
                     "slice taint     krakenplug.pcl.ac.cn/unhealthy=unhealthy:NoSchedule",
                     "health stream   fake-3 UNHEALTHY", "recovered       no taint, health stream fake-3 HEALTHY",
                     "CDI spec removed: True", "Done: agent stopped cleanly"):
        assert expected in out, f"{expected!r} missing from:\n{out}"

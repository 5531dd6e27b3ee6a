"""The user-facing commands around the agent: ``krakenplug demo`` and ``krakenplug devices``."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_env")]  # no KRAKENPLUG_* from outside


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def test_demo_walks_through_every_step_and_exits_zero():
    result = run("-m", "krakenplug", "demo")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "krakenplug.pcl.ac.cn/fake registered on krakenplug-fake.sock: capacity 4, allocatable 4" in out
    for device_id in ("fake-0", "fake-1", "fake-2", "fake-3"):
        assert f"\n  {device_id}  KrakenSim-80G" in out
    assert "== Allocate 2 devices to pod demo/trainer-0" in out
    assert "KRAKENPLUG_VISIBLE_DEVICES=" in out
    assert "all on NUMA node" in out
    assert "Unhealthy -> capacity 4, allocatable 3" in out
    assert "Healthy   -> capacity 4, allocatable 4" in out
    assert 'pod="trainer-0"' in out and "krakenplug_device_util{" in out
    assert out.rstrip().endswith("Done: agent stopped cleanly, sockets and temporary files removed.")


def test_demo_failure_exits_nonzero_with_the_step_and_the_agent_log():
    # The demo waits for a resource nobody serves: the failure path must say what it waited for.
    script = ("import sys, krakenplug.demo as demo; demo.RESOURCE = 'example.com/none'; "
              "demo.WAIT_SECONDS = 3; sys.exit(demo.main())")

    result = run("-c", script)

    assert result.returncode == 1
    assert "demo failed: timed out after 3s waiting for example.com/none to register" in result.stderr
    assert "last lines of the agent log:" in result.stderr
    assert "krakenplug.pcl.ac.cn/fake" in result.stderr  # the agent's own log names what it served


def test_devices_json_lists_the_fake_devices(node):
    node.devices.set_health("fake-2", "Unhealthy")

    result = run("-m", "krakenplug", "devices", "--json", "--backend", "fake",
                 "--fake-devices", str(node.devices.path))

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["id"] for row in rows] == ["fake-0", "fake-1", "fake-2", "fake-3"]
    assert [row["health"] for row in rows] == ["Healthy", "Healthy", "Unhealthy", "Healthy"]
    assert {row["numa_node"] for row in rows} == {0, 1}
    assert {row["resource"] for row in rows} == {"krakenplug.pcl.ac.cn/fake"}
    assert rows[0]["memory_total_mb"] == 81920


def test_demo_keep_running_serves_metrics_until_interrupted():
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen([sys.executable, "-m", "krakenplug", "demo", "--keep-running"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
        reader.start()
        try:
            url = _wait_for_metrics_url(lines)
            with urllib.request.urlopen(url, timeout=10) as reply:
                assert b"krakenplug_device_util{" in reply.read()

            process.send_signal(signal.SIGINT)

            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        reader.join(timeout=10)
    rest = [lines.get() for _ in range(lines.qsize())]
    assert rest[-1].strip() == "Done: agent stopped cleanly, sockets and temporary files removed."


def _wait_for_metrics_url(lines: queue.Queue[str]) -> str:
    """Reads the demo's output up to its Ctrl-C hint; returns the URL of its curl hint."""
    url = None
    while True:
        line = lines.get(timeout=60)
        if "curl -s" in line:
            url = next(word for word in line.split() if word.startswith("http"))
        if "Press Ctrl-C to stop." in line:
            assert url is not None, "the demo printed no curl hint"
            return url

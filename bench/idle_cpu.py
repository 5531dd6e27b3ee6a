"""Idle CPU: a registered ``krakenplug run`` that nothing talks to, over a window after start-up.

Measured with the device plugin, exporter and discovery on (discovery writes an NFD features file,
so it needs no API server) and, for information, with the plugin alone. CPU is the sum over the
process's threads from /proc/<pid>/task/*/schedstat (nanoseconds). Target: at most 0.05% of one core,
i.e. 30 ms over 60 s.

The floor, measured over the same window beside the agent: a bare interpreter that starts one
``grpc.server`` on a unix socket and nothing else. gRPC's C core wakes on its own (its timer thread and
its event-engine pool's lifeguard about once a second, each idle worker every few seconds) and the Python
server's completion-queue loop every 200 ms to check for signals; none of these can be configured from
Python, so that floor is what any Python gRPC server costs at idle (docs/performance.md).

    python bench/idle_cpu.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml
from _common import RESOURCE, Targets, agent, cpu_seconds, free_port, workdir, write_devices

from krakenplug.testing.kubelet import KubeletSimulator

TARGET_FRACTION = 0.0005
SETTLE_SECONDS = 3.0
GRPC_FLOOR = """
import concurrent.futures, os, signal, grpc
server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
server.add_insecure_port("unix://" + os.environ["FLOOR_SOCKET"])
server.start()
signal.sigwait([signal.SIGTERM])
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    targets = Targets()
    alone, floor_alone = _idle_fraction(args.seconds / 2, everything=False)
    print(f"plugin alone: {alone * 100:.4f}% of a core over {args.seconds / 2:g} s (information); "
          f"gRPC floor {floor_alone * 100:.4f}%, ratio {alone / floor_alone:.2f}")
    everything, floor = _idle_fraction(args.seconds, everything=True)
    print(f"plugin + exporter + discovery: {everything * 100:.4f}% of a core over {args.seconds:g} s "
          f"({everything * args.seconds * 1e3:.1f} ms CPU)")
    print(f"floor: a bare grpc.server over the same window: {floor * 100:.4f}% of a core "
          f"({floor * args.seconds * 1e3:.1f} ms CPU); agent / floor = {everything / floor:.2f}, "
          f"above the floor {(everything - floor) * 100:.4f}%")
    targets.check("idle CPU, plugin + exporter + discovery (% of a core)", everything * 100, TARGET_FRACTION * 100,
                  ratio=everything / TARGET_FRACTION)
    return targets.exit_code()


def _idle_fraction(seconds: float, *, everything: bool) -> tuple[float, float]:
    """(the agent's CPU fraction, the bare gRPC server's over the same window)."""
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        write_devices(directory / "devices.yaml", 8)
        extra: tuple[str, ...] = ("--no-exporter",)
        if everything:
            config = directory / "config.yaml"
            config.write_text(yaml.safe_dump({"version": "v1", "discovery": {
                "enabled": True, "patch_node": False, "features_file": str(directory / "features.txt")}}))
            extra = ("--discovery", "--metrics-address", f"127.0.0.1:{free_port()}", "--config", str(config),
                     "--pod-resources-socket", str(directory / "pod-resources.sock"))
        floor = subprocess.Popen([sys.executable, "-c", GRPC_FLOOR], env={"FLOOR_SOCKET": str(directory / "floor.sock")})
        try:
            with agent(directory, directory / "devices.yaml", extra=extra) as process:
                kubelet.wait_for_resource(RESOURCE, allocatable=8, timeout=30)
                time.sleep(SETTLE_SECONDS)
                for name, running in (("the agent", process), ("the floor process", floor)):
                    if running.poll() is not None:
                        raise SystemExit(f"{name} exited early with {running.returncode}")
                before, floor_before = cpu_seconds(process.pid), cpu_seconds(floor.pid)
                started = time.monotonic()
                time.sleep(seconds)
                used, elapsed = cpu_seconds(process.pid) - before, time.monotonic() - started
                floor_used = cpu_seconds(floor.pid) - floor_before
                if everything and not Path(directory / "features.txt").exists():
                    print("note: discovery wrote no features file")
        finally:
            floor.terminate()
            floor.wait(timeout=10)
        return used / elapsed, floor_used / elapsed


if __name__ == "__main__":
    raise SystemExit(main())

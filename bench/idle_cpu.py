"""Idle CPU: a registered ``krakenplug run`` that nothing talks to, over a window after start-up.

Measured with the device plugin, exporter and discovery on (discovery writes an NFD features file,
so it needs no API server) and, for information, with the plugin alone. CPU is the sum over the
process's threads from /proc/<pid>/task/*/schedstat (nanoseconds). Target: at most 0.05% of one core,
i.e. 30 ms over 60 s.

The floors, measured over the same window beside the agent: a bare interpreter that serves one
``grpc.aio`` server on a unix socket and nothing else (what the agent's servers are, krakenplug.grpc_unix),
and, for information, one with a threaded ``grpc.server``. gRPC's C core wakes on its own (its timer
thread and its event-engine pool's lifeguard about once a second, each idle worker every few seconds);
the threaded server's completion-queue loop also wakes every 200 ms to check for signals. None of this
can be configured from Python (docs/plugin.md, Performance).

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
FLOORS = {
    "grpc.aio server": """
import asyncio, os, grpc
async def serve():
    server = grpc.aio.server()
    server.add_insecure_port("unix://" + os.environ["FLOOR_SOCKET"])
    await server.start()
    await server.wait_for_termination()
asyncio.run(serve())
""",
    "threaded grpc.server": """
import concurrent.futures, os, signal, grpc
server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
server.add_insecure_port("unix://" + os.environ["FLOOR_SOCKET"])
server.start()
signal.sigwait([signal.SIGTERM])
""",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    targets = Targets()
    alone, floors_alone = _idle_fraction(args.seconds / 2, everything=False)
    print(f"plugin alone: {alone * 100:.4f}% of a core over {args.seconds / 2:g} s (information); "
          + ", ".join(f"{name} {value * 100:.4f}%" for name, value in floors_alone.items()))
    everything, floors = _idle_fraction(args.seconds, everything=True)
    print(f"plugin + exporter + discovery: {everything * 100:.4f}% of a core over {args.seconds:g} s "
          f"({everything * args.seconds * 1e3:.1f} ms CPU)")
    for name, floor in floors.items():
        print(f"floor: a bare {name} over the same window: {floor * 100:.4f}% of a core "
              f"({floor * args.seconds * 1e3:.1f} ms CPU); agent / floor = {everything / max(floor, 1e-9):.2f}")
    targets.check("idle CPU, plugin + exporter + discovery (% of a core)", everything * 100, TARGET_FRACTION * 100,
                  ratio=everything / TARGET_FRACTION)
    return targets.exit_code()


def _idle_fraction(seconds: float, *, everything: bool) -> tuple[float, dict[str, float]]:
    """(the agent's CPU fraction, each floor process's over the same window)."""
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        write_devices(directory / "devices.yaml", 8)
        extra: tuple[str, ...] = ("--no-exporter",)
        if everything:
            config = directory / "config.yaml"
            config.write_text(yaml.safe_dump({"version": "v1", "discovery": {
                "enabled": True, "patch_node": False, "features_file": str(directory / "features.txt")}}))
            extra = ("--discovery", "--metrics-address", f"127.0.0.1:{free_port()}", "--config", str(config),
                     "--pod-resources-socket", str(directory / "pod-resources.sock"))
        floors = {name: subprocess.Popen([sys.executable, "-c", code],
                                         env={"FLOOR_SOCKET": str(directory / f"floor-{position}.sock")})
                  for position, (name, code) in enumerate(FLOORS.items())}
        try:
            with agent(directory, directory / "devices.yaml", extra=extra) as process:
                kubelet.wait_for_resource(RESOURCE, allocatable=8, timeout=30)
                time.sleep(SETTLE_SECONDS)
                for name, running in (("the agent", process), *floors.items()):
                    if running.poll() is not None:
                        raise SystemExit(f"{name} exited early with {running.returncode}")
                before = cpu_seconds(process.pid)
                floors_before = {name: cpu_seconds(running.pid) for name, running in floors.items()}
                started = time.monotonic()
                time.sleep(seconds)
                used, elapsed = cpu_seconds(process.pid) - before, time.monotonic() - started
                floors_used = {name: cpu_seconds(running.pid) - floors_before[name] for name, running in floors.items()}
                if everything and not Path(directory / "features.txt").exists():
                    print("note: discovery wrote no features file")
        finally:
            for running in floors.values():
                running.terminate()
                running.wait(timeout=10)
        return used / elapsed, {name: value / elapsed for name, value in floors_used.items()}


if __name__ == "__main__":
    raise SystemExit(main())

"""Idle CPU: a registered ``krakenplug run`` that nothing talks to, over a window after start-up.

Measured with the device plugin, exporter and discovery on (discovery writes an NFD features file,
so it needs no API server) and, for information, with the plugin alone. CPU is the sum over the
process's threads from /proc/<pid>/task/*/schedstat (nanoseconds). Target: at most 0.05% of one core,
i.e. 30 ms over 60 s.

    python bench/idle_cpu.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml
from _common import RESOURCE, Targets, agent, cpu_seconds, free_port, workdir, write_devices

from krakenplug.testing.kubelet import KubeletSimulator

TARGET_FRACTION = 0.0005
SETTLE_SECONDS = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    targets = Targets()
    alone = _idle_fraction(args.seconds / 2, everything=False)
    print(f"plugin alone: {alone * 100:.4f}% of a core over {args.seconds / 2:g} s (information)")
    everything = _idle_fraction(args.seconds, everything=True)
    print(f"plugin + exporter + discovery: {everything * 100:.4f}% of a core over {args.seconds:g} s "
          f"({everything * args.seconds * 1e3:.1f} ms CPU)")
    targets.check("idle CPU, plugin + exporter + discovery (% of a core)", everything * 100, TARGET_FRACTION * 100,
                  ratio=everything / TARGET_FRACTION)
    return targets.exit_code()


def _idle_fraction(seconds: float, *, everything: bool) -> float:
    with workdir() as directory, KubeletSimulator(directory) as kubelet:
        write_devices(directory / "devices.yaml", 8)
        extra: tuple[str, ...] = ("--no-exporter",)
        if everything:
            config = directory / "config.yaml"
            config.write_text(yaml.safe_dump({"version": "v1", "discovery": {
                "enabled": True, "patch_node": False, "features_file": str(directory / "features.txt")}}))
            extra = ("--discovery", "--metrics-address", f"127.0.0.1:{free_port()}", "--config", str(config),
                     "--pod-resources-socket", str(directory / "pod-resources.sock"))
        with agent(directory, directory / "devices.yaml", extra=extra) as process:
            kubelet.wait_for_resource(RESOURCE, allocatable=8, timeout=30)
            time.sleep(SETTLE_SECONDS)
            if process.poll() is not None:
                raise SystemExit(f"the agent exited early with {process.returncode}")
            before, started = cpu_seconds(process.pid), time.monotonic()
            time.sleep(seconds)
            used, elapsed = cpu_seconds(process.pid) - before, time.monotonic() - started
            if everything and not Path(directory / "features.txt").exists():
                print("note: discovery wrote no features file")
        return used / elapsed


if __name__ == "__main__":
    raise SystemExit(main())

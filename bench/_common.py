"""Shared pieces of the plugin benchmarks: a real ``krakenplug run`` process, device files, percentiles.

Every benchmark runs the agent as its own process (like on a node) and plays the kubelet with the
project's simulator or with plain generated gRPC stubs from this process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import yaml

RESOURCE = "krakenplug.pcl.ac.cn/fake"
Number = TypeVar("Number", int, float)


def option(doc: str, name: str, default: Number) -> Number:
    """The benchmark's one command-line option ``--<name>`` (how many calls, rounds, seconds), of the type
    of ``default``; ``--help`` shows the first line of the script's docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(f"--{name}", type=type(default), default=default)
    value: Number = getattr(parser.parse_args(), name)
    return value


def write_devices(path: Path, count: int, *, unhealthy: Sequence[int] = ()) -> None:
    devices = [{"id": f"fake-{i}", "model": "KrakenSim-80G", "memory_mb": 81920, "numa_node": i % 2,
                "health": "Unhealthy" if i in unhealthy else "Healthy"} for i in range(count)]
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump({"devices": devices}))
    temporary.replace(path)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A short directory under /tmp (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="kpb-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def agent(directory: Path, devices_file: Path, *, replicas: int = 1, extra: Sequence[str] = ("--no-exporter",),
          env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``krakenplug run`` with the device plugin (and only it, unless ``extra`` says otherwise),
    stopped with SIGTERM afterwards."""
    with agent_process(["--fake-devices", str(devices_file), "--device-plugin-dir", str(directory),
                        "--replicas", str(replicas), "--no-discovery", "--log-level", "warning", *extra],
                       env=env) as process:
        yield process


@contextlib.contextmanager
def agent_process(arguments: Sequence[str], *, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``krakenplug run --backend fake <arguments>`` as its own process, without the caller's KRAKENPLUG_*
    settings (``env`` adds some), stopped with SIGTERM afterwards; its stderr is printed when it exits
    other than by that signal."""
    command = [sys.executable, "-m", "krakenplug", "run", "--backend", "fake", *arguments]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KRAKENPLUG_")}
    environment.update(env or {})
    # stderr to a file, not a pipe: nobody reads a pipe during the run, and a full one would stall the agent.
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode not in (0, -signal.SIGTERM):
                log.seek(0)
                print(f"agent exited with {process.returncode}:\n{log.read()}", file=sys.stderr)


class Targets:
    """Collects target checks; ``exit_code()`` is 1 when any was missed, so run_all.sh can list the misses."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def check(self, what: str, value: float, limit: float, *, unit: str = "", ratio: float | None = None) -> bool:
        """Prints ``what: value (target <= limit)`` with MISS when the value is above the limit."""
        met = value <= limit
        shown = f"ratio {ratio:.2f}; " if ratio is not None else ""
        print(f"{'met ' if met else 'MISS'} {what}: {shown}{value:.3g}{unit} (target <= {limit:g}{unit})")
        if not met:
            self.missed.append(f"{what}: {value:.3g}{unit} > {limit:g}{unit}")
        return met

    def exit_code(self) -> int:
        return 1 if self.missed else 0


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process so far, in seconds (nanosecond resolution from schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total / 1e9


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def describe(name: str, samples: Sequence[float], *, unit: float = 1e3, suffix: str = "ms") -> str:
    return (f"{name}: n={len(samples)} p50={percentile(samples, 0.5) * unit:.3f}{suffix} "
            f"p99={percentile(samples, 0.99) * unit:.3f}{suffix} mean={statistics.fmean(samples) * unit:.3f}{suffix}")


def timed(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process in MiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

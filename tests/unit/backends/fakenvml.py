"""MIG layouts for the fake NVML (fakelibs/fake_nvml.c) and the driver files a MIG device needs on a host.

Shared by the NVIDIA unit tests and the node e2e (tests/e2e/vendors loads it by path).
"""

from __future__ import annotations

from pathlib import Path

H100 = "NVIDIA H100 80GB HBM3"
H100_MB = 81559
# (GPU instance slices, compute instance slices, MiB) of H100 80GB profiles
PROFILE_3G = (3, 3, 40448)
PROFILE_1G = (1, 1, 9856)

MigSpec = tuple[int, str, int, int, tuple[int, int, int]]  # (MIG index, UUID, GI, CI, profile)


def mig_fields(*devices: MigSpec) -> dict[str, object]:
    """Fixture fields of a MIG-enabled GPU with these MIG devices."""
    fields: dict[str, object] = {"mig_mode": 1}
    for position, uuid, gi, ci, (gi_slices, ci_slices, memory) in devices:
        fields.update({f"mig{position}.uuid": uuid, f"mig{position}.gi": gi, f"mig{position}.ci": ci,
                       f"mig{position}.gi_slices": gi_slices, f"mig{position}.ci_slices": ci_slices,
                       f"mig{position}.memory_mb": memory})
    return fields


def h100(uuid: str, bus_id: str, minor: int, **fields: object) -> dict[str, object]:
    """Fixture fields of one H100 80GB."""
    return {"uuid": uuid, "name": H100, "bus_id": bus_id, "minor": minor, "memory_total_mb": H100_MB, **fields}


def add_mig_capabilities(dev: Path, proc: Path, gpu_minor: int, gi: int, ci: int, minors: tuple[int, int]) -> None:
    """The driver's /proc capability files of one MIG device (GPU instance, compute instance) and their
    /dev/nvidia-caps nodes, as the NVIDIA driver and nvidia-modprobe create them."""
    caps = proc / "driver" / "nvidia" / "capabilities" / f"gpu{gpu_minor}" / "mig" / f"gi{gi}"
    (caps / f"ci{ci}").mkdir(parents=True, exist_ok=True)
    (dev / "nvidia-caps").mkdir(parents=True, exist_ok=True)
    for path, minor in ((caps / "access", minors[0]), (caps / f"ci{ci}" / "access", minors[1])):
        path.write_text(f"DeviceFileMinor: {minor}\nDeviceFileMode: 292\nDeviceFileModify: 1\n")
        (dev / "nvidia-caps" / f"nvidia-cap{minor}").write_text("")

"""MIG: profile names, the strategies (none / single / mixed) and the capability device nodes.

Strategies, as NVIDIA's device plugin has them:

* ``none``: MIG is ignored; every GPU is advertised whole, MIG-enabled or not.
* ``single``: when no GPU has MIG enabled, as ``none``. Otherwise every GPU must have MIG enabled, with at
  least one MIG device, all of one profile; the MIG devices are then advertised under the vendor's
  resource. Any other layout is refused: nothing is advertised and the error says what was found.
* ``mixed``: GPUs without MIG are advertised whole; each MIG device under one resource per profile,
  ``<mig_resource_prefix><profile>`` (e.g. ``krakenplug.pcl.ac.cn/nvidia-mig-3g.40gb``) unless a
  ``resources`` rule matches its NVML name (e.g. ``NVIDIA H100 80GB HBM3 MIG 3g.40gb``).

A MIG-enabled GPU without MIG devices has nothing usable: it is not advertised (logged).

Profile names follow NVIDIA's go-nvlib: ``<g>g.<gb>gb``, or ``<c>c.<g>g.<gb>gb`` when the compute
instance has fewer slices than its GPU instance; the memory is the device's share of the GPU rounded up
to eighths, times the GPU's memory in GB. The ``+me`` (media extensions) variants cannot be told apart
from the attributes NVML gives a MIG device handle, so they carry their base profile's name.

A container using a MIG device needs the parent GPU's ``/dev/nvidia<minor>`` and the capability device
nodes of its GPU instance and compute instance: ``/dev/nvidia-caps/nvidia-cap<N>``, where N is the
``DeviceFileMinor`` in ``/proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<GI>[/ci<CI>]/access`` (or,
where those files are not readable, the line for that path in ``/proc/driver/nvidia-caps/mig-minors``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from krakenplug.backends import base

if TYPE_CHECKING:
    from krakenplug.backends.nvidia.gpus import Gpu, MigDevice

Strategy = Literal["none", "single", "mixed"]

_MINOR_LINE = re.compile(r"^\s*DeviceFileMinor:\s*(\d+)\s*$", re.MULTILINE)
_GB = 1024 * 1024 * 1024


def profile_name(gi_slices: int, ci_slices: int, memory_mb: int, gpu_total_bytes: int | None) -> str:
    """The MIG profile of a device with these attributes, as NVIDIA names it (e.g. "1g.10gb", "1c.3g.40gb")."""
    if gpu_total_bytes:
        share = math.ceil(memory_mb * 1024 * 1024 / gpu_total_bytes * 8) / 8
        gigabytes = round(share * ((gpu_total_bytes + _GB - 1) // _GB))
    else:  # the GPU's memory is unknown: round the device's own memory up to whole GB
        gigabytes = (memory_mb + 1023) // 1024
    if ci_slices == gi_slices:
        return f"{gi_slices}g.{gigabytes}gb"
    return f"{ci_slices}c.{gi_slices}g.{gigabytes}gb"


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a strategy advertises: whole GPUs, MIG devices, and why something is refused or left out."""

    whole: tuple[Gpu, ...] = ()
    mig_devices: tuple[MigDevice, ...] = ()
    refused: str = ""  # non-empty: nothing is advertised
    notes: tuple[str, ...] = ()  # GPUs left out, for the log


def layout(strategy: Strategy, gpus: Sequence[Gpu], mig_devices: dict[int, list[MigDevice]]) -> Layout:
    """What ``strategy`` advertises for ``gpus``; ``mig_devices`` by GPU index for the MIG-enabled ones."""
    enabled = [gpu for gpu in gpus if gpu.mig_enabled]
    if strategy == "none" or not enabled:
        return Layout(whole=tuple(gpus))
    empty = tuple(f"GPU {gpu.index} ({gpu.uuid}) has MIG enabled but no MIG devices" for gpu in enabled
                  if not mig_devices.get(gpu.index))
    slices = tuple(device for gpu in enabled for device in mig_devices.get(gpu.index, []))
    if strategy == "mixed":
        return Layout(whole=tuple(gpu for gpu in gpus if not gpu.mig_enabled), mig_devices=slices, notes=empty)
    profiles = sorted({device.profile for device in slices})
    disabled = [gpu for gpu in gpus if not gpu.mig_enabled]
    if disabled or empty or len(profiles) != 1:
        found = [f"GPU {gpu.index}: " + (", ".join(sorted(d.profile for d in mig_devices.get(gpu.index, [])))
                                          or "no MIG devices") if gpu.mig_enabled else f"GPU {gpu.index}: MIG disabled"
                 for gpu in gpus]
        return Layout(refused="mig_strategy=single needs every GPU MIG-enabled with MIG devices of one profile; "
                              f"found {'; '.join(found)}. Use mig_strategy=mixed, or repartition the GPUs")
    return Layout(mig_devices=slices)


class MissingCapability(Exception):
    """A capability device node a MIG device needs is not there."""


def capability_nodes(proc_root: str, dev_root: str, gpu_minor: int, gpu_instance: int,
                     compute_instance: int) -> tuple[base.DeviceNode, ...]:
    """The GPU-instance and compute-instance capability device nodes of one MIG device."""
    gi = f"gpu{gpu_minor}/mig/gi{gpu_instance}"
    nodes = []
    for capability in (f"{gi}/access", f"{gi}/ci{compute_instance}/access"):
        minor = _capability_minor(proc_root, capability)
        name = f"nvidia-caps/nvidia-cap{minor}"
        host_path = os.path.join(dev_root, name)
        if not os.path.exists(host_path):
            raise MissingCapability(f"{host_path} (capability {capability}) does not exist")
        nodes.append(base.DeviceNode(host_path, f"/dev/{name}"))
    return tuple(nodes)


def _capability_minor(proc_root: str, capability: str) -> int:
    access = os.path.join(proc_root, "driver", "nvidia", "capabilities", capability)
    try:
        with open(access, encoding="ascii", errors="replace") as file:
            found = _MINOR_LINE.search(file.read())
        if found:
            return int(found.group(1))
    except OSError:
        pass
    minors = os.path.join(proc_root, "driver", "nvidia-caps", "mig-minors")
    listed = capability.replace("/mig/", "/", 1)  # that table says "gpu0/gi1/ci0/access 13"
    try:
        with open(minors, encoding="ascii", errors="replace") as file:
            for line in file:
                parts = line.split()
                if len(parts) == 2 and parts[0] == listed and parts[1].isdigit():
                    return int(parts[1])
    except OSError:
        pass
    raise MissingCapability(f"no device minor for {capability} in {access} or {minors}")

"""What NVML says about each GPU and its MIG devices, read through the bounded ``nvml.Nvml`` calls.

Memory comes from ``nvmlDeviceGetMemoryInfo_v2`` where the library has it: its ``used`` leaves out the
memory the driver reserves (v1's ``used`` counts it), and ``reserved`` is reported apart. Older libraries
lack the v2 symbol; the v1 call is then used and its ``used`` includes the reserve (logged once).
A GPU or MIG device that does not offer memory info (integrated SoC GPUs: NOT_SUPPORTED; MIG devices in
some setups: NO_PERMISSION) is still listed, with its memory unknown. Queries a device can be served
without (PCI info, minor number, memory, metrics) read as absent when they fail (``_vendorlib.OptionalQueries``:
logged when the failure starts and ends); identity queries (handle, UUID, name, MIG mode) do not.

MIG devices are found as nvml.h describes: ``nvmlDeviceGetMaxMigDeviceCount`` bounds the indexes and
``nvmlDeviceGetMigDeviceHandleByIndex`` answers NOT_FOUND where no MIG device exists (indexes may have
holes); each one's GPU instance and compute instance IDs, attributes and name are read from its handle.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable
from typing import Any

import pynvml

from krakenplug.backends import _sysfs, _vendorlib
from krakenplug.backends.nvidia import mig, nvml
from krakenplug.transitions import TransitionLog

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
_OPTIONAL = _vendorlib.OptionalQueries("nvidia")
# The v2 call is absent (old library) or refuses the struct version: use v1 from then on.
_NO_V2_CODES = (pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)


@dataclasses.dataclass(frozen=True)
class Memory:
    total_bytes: int
    used_bytes: int  # allocated by processes; with v1 also the driver's reserve
    reserved_bytes: int | None  # None: read with v1, which does not report it apart


@dataclasses.dataclass(frozen=True)
class Gpu:
    index: int
    handle: Any
    uuid: str
    name: str
    bus_id: str | None
    minor: int | None
    memory: Memory | None
    mig_enabled: bool


@dataclasses.dataclass(frozen=True)
class MigDevice:
    gpu: Gpu
    position: int  # the index nvmlDeviceGetMigDeviceHandleByIndex was asked for
    handle: Any
    uuid: str
    name: str
    gpu_instance: int
    compute_instance: int
    profile: str  # e.g. "3g.40gb"
    memory_mb: int
    memory: Memory | None


class MemoryReader:
    """Memory of a GPU or MIG device handle, v2 where the library offers it."""

    def __init__(self, api: nvml.Nvml) -> None:
        self._api = api
        self._v2 = True
        self._log = TransitionLog(logger)

    @property
    def generation(self) -> str:
        return "v2" if self._v2 else "v1"

    def read(self, handle: Any, *, key: Hashable) -> Memory | None:
        """None when the device does not offer memory info to us; raises DeviceQueryError otherwise."""
        if self._v2:
            try:
                info = self._api.call("nvmlDeviceGetMemoryInfo", handle, pynvml.nvmlMemory_v2, key=key)
                return Memory(int(info.total), int(info.used), int(info.reserved))
            except _vendorlib.VendorCallError as err:
                if err.code not in _NO_V2_CODES:
                    _not_offered(err)
                    return None
                self._v2 = False
                self._log.report("v1", "v1", logging.WARNING,
                                 "nvidia: %s; reading memory with v1 nvmlDeviceGetMemoryInfo, whose 'used' "
                                 "includes the driver's reserved memory", err)
        try:
            info = self._api.call("nvmlDeviceGetMemoryInfo", handle, key=key)
        except _vendorlib.VendorCallError as err:
            _not_offered(err)
            return None
        return Memory(int(info.total), int(info.used), None)


def _not_offered(err: _vendorlib.VendorCallError) -> None:
    """Raises ``err`` unless it says the device does not offer memory info."""
    if not isinstance(err, _vendorlib.NotSupported):
        raise err
    logger.debug("nvidia: memory info not offered: %s", err)


def optional(api: nvml.Nvml, name: str, *args: Any, key: Hashable) -> Any:
    """The call's result, or None when this GPU or driver does not offer it or the call fails."""
    return _OPTIONAL.get(lambda: api.call(name, *args, key=key), key=key, what=name)


def optional_memory(memory: MemoryReader, handle: Any, *, key: Hashable) -> Memory | None:
    """``memory.read``, or None when it fails (the device keeps being served)."""
    return _OPTIONAL.get(lambda: memory.read(handle, key=key), key=key, what="memory info")


def text(value: str | bytes) -> str:
    return (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()


def read_gpu(api: nvml.Nvml, memory: MemoryReader, index: int) -> Gpu:
    """The GPU at NVML ``index``; raises DeviceQueryError or ValueError when a required query fails."""
    handle = api.call("nvmlDeviceGetHandleByIndex", index, key=index)
    uuid = text(api.call("nvmlDeviceGetUUID", handle, key=index))
    name = text(api.call("nvmlDeviceGetName", handle, key=index))
    pci = optional(api, "nvmlDeviceGetPciInfo_v3", handle, key=index)
    bus_id = _sysfs.normalize_bus_id(text(pci.busId)) if pci is not None else None
    minor = optional(api, "nvmlDeviceGetMinorNumber", handle, key=index)
    try:
        modes = api.call("nvmlDeviceGetMigMode", handle, key=index)
    except _vendorlib.NotSupported:
        modes = None  # not a MIG-capable GPU
    enabled = modes is not None and modes[0] == pynvml.NVML_DEVICE_MIG_ENABLE
    return Gpu(index=index, handle=handle, uuid=uuid, name=name, bus_id=bus_id, minor=minor,
               memory=optional_memory(memory, handle, key=index), mig_enabled=enabled)


def read_mig_devices(api: nvml.Nvml, memory: MemoryReader, gpu: Gpu) -> list[MigDevice]:
    """The MIG devices of a MIG-enabled GPU; raises DeviceQueryError when a required query fails.

    Calls carry the GPU's index as key, so a stuck call on a MIG device marks its GPU (and with it
    every MIG device on it) until the call returns in time again.
    """
    key = gpu.index
    found = []
    for position in range(api.call("nvmlDeviceGetMaxMigDeviceCount", gpu.handle, key=key)):
        try:
            handle = api.call("nvmlDeviceGetMigDeviceHandleByIndex", gpu.handle, position, key=key)
        except _vendorlib.VendorCallError as err:
            if err.code == pynvml.NVML_ERROR_NOT_FOUND:
                continue  # no MIG device at this index
            raise
        attributes = api.call("nvmlDeviceGetAttributes_v2", handle, key=key)
        device_memory = optional_memory(memory, handle, key=key)
        memory_mb = device_memory.total_bytes // MIB if device_memory else int(attributes.memorySizeMB)
        found.append(MigDevice(
            gpu=gpu, position=position, handle=handle, uuid=text(api.call("nvmlDeviceGetUUID", handle, key=key)),
            name=text(api.call("nvmlDeviceGetName", handle, key=key)),
            gpu_instance=int(api.call("nvmlDeviceGetGpuInstanceId", handle, key=key)),
            compute_instance=int(api.call("nvmlDeviceGetComputeInstanceId", handle, key=key)),
            profile=mig.profile_name(int(attributes.gpuInstanceSliceCount), int(attributes.computeInstanceSliceCount),
                                     int(attributes.memorySizeMB), gpu.memory.total_bytes if gpu.memory else None),
            memory_mb=memory_mb, memory=device_memory,
        ))
    return found

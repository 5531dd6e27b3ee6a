"""The SR-IOV tests' constants and backend double (a module of its own: conftest is not importable by name)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))

from fakelib import FakeKernel, pci_dir  # noqa: E402

from krakenplug.backends import _sriov, base  # noqa: E402

VENDOR = 0x1D22
NODE = "node-a"
PF0, PF1 = "0000:3b:00.0", "0000:86:00.0"
LABEL = "baidu.com/sriov-num-vfs"
RESOURCE = "baidu.com/xpu"


class SysfsSriovBackend:
    """A backend whose devices are the fake sysfs's PFs of VENDOR (a PF with VFs: its VFs), VF counts set
    through sysfs with the fake kernel; ``ids`` renames devices (e.g. long IDs) by bus ID."""

    name: ClassVar[str] = "sysfs-sriov"

    def __init__(self, sysfs: Path, kernel: FakeKernel, options: base.SriovOptions,
                 ids: dict[str, str] | None = None) -> None:
        self.sysfs, self.kernel, self.options, self.ids = sysfs, kernel, options, ids or {}

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def devices(self) -> Sequence[base.Device]:
        found = []
        for pf in self.physical_functions():
            for bus_id in pf.vf_bus_ids or (pf.bus_id,):
                found.append(base.Device(id=self.ids.get(bus_id, bus_id), index=len(found), vendor="kunlun",
                                         model="R200", memory_total_mb=1, resource=RESOURCE, pci_bus_id=bus_id))
        return found

    def allocate(self, devices: Sequence[base.Device]) -> base.ContainerAllocation:
        return base.ContainerAllocation()

    def sample(self, device: base.Device) -> base.DeviceSample:
        return base.DeviceSample()

    def sriov_options(self) -> base.SriovOptions:
        return self.options

    def physical_functions(self) -> Sequence[base.PhysicalFunction]:
        return _sriov.find_physical_functions(str(self.sysfs), vendor=VENDOR)

    def set_vf_count(self, pf_bus_id: str, count: int) -> None:
        pf = _sriov.read_physical_function(str(self.sysfs), pf_bus_id)
        assert pf is not None
        _sriov.set_vf_count(pf, count, sysfs_root=str(self.sysfs), writer=self.kernel,
                            wait_seconds=self.options.sriov_vf_wait_seconds)


def num_vfs(sysfs: Path, bus_id: str) -> int:
    return int((pci_dir(sysfs, bus_id) / "sriov_numvfs").read_text())

"""SR-IOV in sysfs (the backend side) against a fake sysfs with a fake kernel (no monkeypatching of the code under
test). How many VFs, and when, is the SR-IOV component's: tests/unit/sriov."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fakelib import FakeKernel, make_pci_device, pci_dir, vf_bus_id

from krakenplug.backends import _sriov

VENDOR = 0x1D22
PF0, PF1 = "0000:3b:00.0", "0000:86:00.0"


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    make_pci_device(root, PF0, vendor=VENDOR, device=0x3684, numa_node=0, total_vfs=3)
    make_pci_device(root, PF1, vendor=VENDOR, device=0x3684, numa_node=1, total_vfs=3)
    make_pci_device(root, "0000:01:00.0", vendor=0x10DE, device=0x2330, total_vfs=8)  # someone else's PF
    make_pci_device(root, "0000:02:00.0", vendor=VENDOR, device=0x3684)  # not SR-IOV capable
    return root


@pytest.fixture
def kernel(sysfs: Path) -> FakeKernel:
    return FakeKernel(sysfs)


def num_vfs(sysfs: Path, bus_id: str) -> int:
    return int((pci_dir(sysfs, bus_id) / "sriov_numvfs").read_text())


# -- sysfs -----------------------------------------------------------------------------------------


def test_physical_functions_are_found_by_vendor_and_need_sriov_totalvfs(sysfs: Path, kernel: FakeKernel) -> None:
    kernel(str(pci_dir(sysfs, PF0) / "sriov_numvfs"), "2")

    found = _sriov.find_physical_functions(str(sysfs), vendor=VENDOR)

    assert [(pf.bus_id, pf.total_vfs, pf.num_vfs) for pf in found] == [(PF0, 3, 2), (PF1, 3, 0)]
    assert found[0].vf_bus_ids == (vf_bus_id(PF0, 0), vf_bus_id(PF0, 1))
    assert _sriov.physical_function_of(str(sysfs), vf_bus_id(PF0, 1)) == PF0
    assert _sriov.physical_function_of(str(sysfs), PF0) is None
    assert _sriov.find_physical_functions(str(sysfs), vendor=VENDOR, device_ids={0x9999}) == []


def test_changing_the_count_writes_zero_first_then_waits_for_the_vfs(sysfs: Path, kernel: FakeKernel) -> None:
    pf = _sriov.read_physical_function(str(sysfs), PF0)
    pf = _sriov.set_vf_count(pf, 2, sysfs_root=str(sysfs), writer=kernel, wait_seconds=5)
    assert pf.num_vfs == 2 and len(pf.vf_bus_ids) == 2

    pf = _sriov.set_vf_count(pf, 3, sysfs_root=str(sysfs), writer=kernel, wait_seconds=5)

    assert kernel.writes == [(PF0, "2"), (PF0, "0"), (PF0, "3")]
    assert pf.vf_bus_ids == tuple(vf_bus_id(PF0, i) for i in range(3))


def test_the_fake_kernel_refuses_n_to_m_without_zero_like_the_real_one(sysfs: Path, kernel: FakeKernel) -> None:
    path = str(pci_dir(sysfs, PF0) / "sriov_numvfs")
    kernel(path, "1")
    with pytest.raises(OSError) as busy:
        kernel(path, "2")
    with pytest.raises(OSError) as out_of_range:
        kernel(path, "4")
    assert (busy.value.errno, out_of_range.value.errno) == (errno.EBUSY, errno.ERANGE)


def test_a_driver_that_refuses_the_enable_is_reported_and_the_old_count_restored(sysfs: Path,
                                                                                 kernel: FakeKernel) -> None:
    kernel(str(pci_dir(sysfs, PF0) / "sriov_numvfs"), "1")
    kernel.errors[(PF0, 3)] = errno.ENOMEM
    pf = _sriov.read_physical_function(str(sysfs), PF0)

    with pytest.raises(_sriov.SriovError, match=r"writing 3 .* ENOMEM.*restored the previous 1 VFs"):
        _sriov.set_vf_count(pf, 3, sysfs_root=str(sysfs), writer=kernel, wait_seconds=1)

    assert num_vfs(sysfs, PF0) == 1


def test_a_pf_without_sysfs_sriov_support_gets_a_hint(sysfs: Path, kernel: FakeKernel) -> None:
    kernel.errors[(PF0, 2)] = errno.ENOENT
    pf = _sriov.read_physical_function(str(sysfs), PF0)
    with pytest.raises(_sriov.SriovError, match="does not support SR-IOV configuration through sysfs"):
        _sriov.set_vf_count(pf, 2, sysfs_root=str(sysfs), writer=kernel, wait_seconds=1)


def test_vfs_that_never_appear_end_the_wait_with_an_error(sysfs: Path) -> None:
    def kernel_without_vfs(path: str, value: str) -> None:
        Path(path).write_text(value)

    pf = _sriov.read_physical_function(str(sysfs), PF0)
    with pytest.raises(_sriov.SriovError, match="0 of 2 VFs appeared within 0.2 s"):
        _sriov.set_vf_count(pf, 2, sysfs_root=str(sysfs), writer=kernel_without_vfs, wait_seconds=0.2)


def test_the_production_writer_writes_the_value(tmp_path: Path) -> None:
    target = tmp_path / "sriov_numvfs"
    _sriov.write_sysfs(str(target), "3")
    assert target.read_text() == "3"

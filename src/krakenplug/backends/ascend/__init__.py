"""Huawei Ascend NPU backend (DCMI through ctypes)."""

from krakenplug.backends.ascend.backend import AscendBackend, AscendOptions

__all__ = ["AscendBackend", "AscendOptions"]

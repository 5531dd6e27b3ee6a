"""Kunlunxin (Baidu) XPU backend: XPUML through ctypes, SR-IOV virtual functions through sysfs."""

from krakenplug.backends.kunlun.backend import KunlunBackend, KunlunOptions

__all__ = ["KunlunBackend", "KunlunOptions"]

"""Cambricon MLU backend (CNDev through ctypes)."""

from krakenplug.backends.cambricon.backend import CambriconBackend, CambriconOptions

__all__ = ["CambriconBackend", "CambriconOptions"]

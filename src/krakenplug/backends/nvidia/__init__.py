"""NVIDIA GPU backend (NVML through pynvml)."""

from krakenplug.backends.nvidia.backend import NvidiaBackend, NvidiaOptions

__all__ = ["NvidiaBackend", "NvidiaOptions"]

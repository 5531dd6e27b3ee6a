"""StreamComputing NPU backend: sysfs and /dev, STCML through ctypes where installed, stc-smi for usage."""

from krakenplug.backends.streamcomputing.backend import StreamComputingBackend, StreamComputingOptions

__all__ = ["StreamComputingBackend", "StreamComputingOptions"]

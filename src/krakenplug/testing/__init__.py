"""Test helpers shipped with the package: a kubelet simulator with a PodResources server.

They let tests, the ``krakenplug demo`` command and users exercise a device plugin through the real
kubelet gRPC APIs on unix sockets, on any machine, without a cluster.
"""

from krakenplug.testing.errors import AdmissionError, PluginCallError
from krakenplug.testing.kubelet import KubeletSimulator
from krakenplug.testing.podresources import PodResourcesServer
from krakenplug.testing.state import Allocation, DeviceView, ResourceState

__all__ = [
    "AdmissionError",
    "Allocation",
    "DeviceView",
    "KubeletSimulator",
    "PluginCallError",
    "PodResourcesServer",
    "ResourceState",
]

"""KrakenPlug: device plugin, exporter and discovery for heterogeneous AI accelerators."""

from krakenplug._version import __version__

__all__ = ["__version__"]

"""The package version: the one place it is written (pyproject.toml reads it from here).

A plain constant because ``importlib.metadata.version()`` costs about 30 ms at start-up (it imports
``email`` and scans the installed distributions), paid by every ``krakenplug`` process.
"""

__version__ = "0.1.0"

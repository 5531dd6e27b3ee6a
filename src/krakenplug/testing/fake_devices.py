"""Edits of the fake backend's devices file as the demos make them (the agent watches the file)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def set_health(devices_file: Path, device_id: str, health: str) -> None:
    """Sets one device's ``health`` (Healthy or Unhealthy), replacing the file atomically: the agent
    never reads half a file."""
    data = yaml.safe_load(devices_file.read_text())
    for spec in data["devices"]:
        if spec["id"] == device_id:
            spec["health"] = health
    temporary = devices_file.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(temporary, devices_file)

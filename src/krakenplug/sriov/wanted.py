"""How many VFs each PF of this node should have, from three sources, highest priority first.

The node label (``sriov_node_label``, read from the API server and watched), the SR-IOV config file
(``sriov_config_file``: YAML ``{defaultNumVfs: N, nodes: {<node>: N}}``, a per-node entry beating the
default) and the option ``sriov_num_vfs`` (``krakenplug run --sriov-num-vfs N``). When no source sets a
value the PFs are left as they are (SR-IOV is off unless asked for). A rejected value (not an integer,
negative) raises :class:`SriovRejected` naming the source and the value: a lower source is not used
instead, so a typo never silently reconfigures a node.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from krakenplug import errors
from krakenplug.backends.base import SriovOptions

__all__ = ["SriovRejected", "WantedVfs", "count_from_config_file", "parse_vf_count", "wanted"]


class SriovRejected(errors.ConfigError):
    """A VF count from one source cannot be used; the message names the source and the value."""


@dataclasses.dataclass(frozen=True)
class WantedVfs:
    count: int | None  # None: no source sets a value
    source: str


def parse_vf_count(raw: object, *, source: str) -> int:
    """A VF count from ``source``; SriovRejected naming source and value unless a non-negative integer."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise SriovRejected(f"{source}: VF count must be a non-negative integer, got {raw!r}")
    text = str(raw).strip()
    if not text.lstrip("-").isdigit():
        raise SriovRejected(f"{source}: VF count must be a non-negative integer, got {raw!r}")
    if int(text) < 0:
        raise SriovRejected(f"{source}: VF count must not be negative, got {raw!r}")
    return int(text)


def count_from_config_file(path: Path, node_name: str) -> WantedVfs:
    """The count the config file sets for ``node_name`` (its nodes entry, else defaultNumVfs)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        return WantedVfs(None, f"SR-IOV config file {path} (absent)")
    except (OSError, yaml.YAMLError) as err:
        raise SriovRejected(f"SR-IOV config file {path}: cannot read: {err}") from err
    if data is None:
        return WantedVfs(None, f"SR-IOV config file {path}")
    if not isinstance(data, dict) or not set(data) <= {"defaultNumVfs", "nodes"}:
        raise SriovRejected(f"SR-IOV config file {path}: expected keys defaultNumVfs and nodes, got {data!r}")
    nodes = data.get("nodes") or {}
    if not isinstance(nodes, dict):
        raise SriovRejected(f"SR-IOV config file {path}: nodes must map node names to counts, got {nodes!r}")
    if node_name in nodes:
        source = f"SR-IOV config file {path} nodes.{node_name}"
        return WantedVfs(parse_vf_count(nodes[node_name], source=source), source)
    if data.get("defaultNumVfs") is not None:
        source = f"SR-IOV config file {path} defaultNumVfs"
        return WantedVfs(parse_vf_count(data["defaultNumVfs"], source=source), source)
    return WantedVfs(None, f"SR-IOV config file {path}")


def wanted(options: SriovOptions, node_name: str, label_value: str | None) -> WantedVfs:
    """The count of the highest source that sets one (``label_value``: the node label's value, or None)."""
    if options.sriov_node_label and label_value not in (None, ""):
        source = f"node label {options.sriov_node_label}"
        return WantedVfs(parse_vf_count(label_value, source=source), source)
    if options.sriov_config_file is not None:
        from_file = count_from_config_file(options.sriov_config_file, node_name)
        if from_file.count is not None:
            return from_file
    if options.sriov_num_vfs is not None:
        return WantedVfs(options.sriov_num_vfs, "option sriov_num_vfs")
    return WantedVfs(None, "no source sets a VF count")

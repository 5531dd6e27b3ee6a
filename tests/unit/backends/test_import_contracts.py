"""The import-linter contracts about vendor backends cover every registered backend.

The contracts in pyproject.toml name the vendors through wildcards (``krakenplug.backends.*``), so a
new vendor is covered without an edit. This test keeps it that way: a contract that went back to
naming vendors one by one and left a registered backend out would let ``lint-imports`` stay green
while nothing checks that backend.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from krakenplug import backends

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"

# contract name -> the field that must cover every registered backend's package
VENDOR_CONTRACTS = {
    "Vendor backends do not know each other": "modules",
    "Only the NVIDIA backend imports pynvml": "source_modules",
    "Components and shared code never import a vendor backend directly": "forbidden_modules",
}


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return {contract["name"]: contract for contract in config["tool"]["importlinter"]["contracts"]}


def _covers(expression: str, module: str) -> bool:
    """import-linter's module expressions: ``*`` is one name, ``**`` one or more; a package covers its
    submodules (the contracts' default ``as_packages``)."""
    pattern = r"\.".join(r"[^.]+(\.[^.]+)*" if part == "**" else "[^.]+" if part == "*" else re.escape(part)
                         for part in expression.split("."))
    return re.fullmatch(rf"{pattern}(\..+)?", module) is not None


def _uncovered(expressions: list[str], names: list[str]) -> list[str]:
    return [name for name in names
            if not any(_covers(expression, f"krakenplug.backends.{name}") for expression in expressions)]


@pytest.mark.parametrize("contract_name", sorted(VENDOR_CONTRACTS))
def test_vendor_contract_covers_every_registered_backend(contract_name: str) -> None:
    contracts = _contracts()
    assert contract_name in contracts, f"pyproject.toml: import-linter contract {contract_name!r} is gone"
    field = VENDOR_CONTRACTS[contract_name]
    missing = _uncovered(contracts[contract_name][field], backends.names())
    assert not missing, f"pyproject.toml: contract {contract_name!r} field {field} does not cover {missing}"


def test_a_backend_left_out_of_a_list_by_name_is_reported() -> None:
    listed = ["krakenplug.backends.nvidia", "krakenplug.backends.ascend"]
    assert _uncovered(listed, ["nvidia", "ascend", "enflame"]) == ["enflame"]
    assert _uncovered(["krakenplug.backends.*"], ["nvidia", "enflame"]) == []
    assert _uncovered(["krakenplug"], ["enflame"]) == []


def test_expressions_match_as_import_linter_does() -> None:
    assert _covers("krakenplug.backends.*", "krakenplug.backends.ascend.backend")
    assert not _covers("krakenplug.backends.*", "krakenplug.backends")
    assert _covers("krakenplug.**.dcmi", "krakenplug.backends.ascend.dcmi")
    assert not _covers("krakenplug.backends.nvidia", "krakenplug.backends.nvidia_ext")

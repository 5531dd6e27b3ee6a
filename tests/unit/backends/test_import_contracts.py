"""The import-linter contracts that name backends one by one must name every registered backend.

import-linter's wildcards cannot tell a vendor package (``backends.ascend``) from the shared modules
beside it (``backends.base``, ``_vendorlib``, ``_devicebook``, ``_sysfs``, ``fallback``), so these
contracts list vendors by name. A backend added to the registry but forgotten here would leave
``lint-imports`` green while nothing checks it; this test makes forgetting it fail.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from krakenplug import backends

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
PREFIX = "krakenplug.backends."

# contract name -> (field, the registered backends that field leaves out on purpose)
VENDOR_LISTS: dict[str, tuple[str, frozenset[str]]] = {
    "Vendor backends do not know each other": ("modules", frozenset()),
    "Only the NVIDIA backend imports pynvml": ("source_modules", frozenset({"nvidia"})),  # pynvml is its library
    # the fake backend is the demo's and e2e's device source, not a vendor; shared code may use it
    "Components and shared code never import a vendor backend directly": ("forbidden_modules", frozenset({"fake"})),
}


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return {contract["name"]: contract for contract in config["tool"]["importlinter"]["contracts"]}


def _named_backends(modules: list[str]) -> set[str]:
    registered = set(backends.names())
    return {module.removeprefix(PREFIX) for module in modules if module.removeprefix(PREFIX) in registered}


def _missing(contract_name: str) -> list[str]:
    """The registered backends that the contract's vendor list should name but does not."""
    contracts = _contracts()
    assert contract_name in contracts, f"pyproject.toml: import-linter contract {contract_name!r} is gone"
    field, left_out = VENDOR_LISTS[contract_name]
    listed = _named_backends(contracts[contract_name][field])
    assert not listed & left_out, f"pyproject.toml: contract {contract_name!r} field {field} lists {listed & left_out}"
    return sorted(set(backends.names()) - left_out - listed)


@pytest.mark.parametrize("contract_name", sorted(VENDOR_LISTS))
def test_vendor_listing_contract_names_every_registered_backend(contract_name: str) -> None:
    missing = _missing(contract_name)
    assert not missing, (f"pyproject.toml: contract {contract_name!r} field {VENDOR_LISTS[contract_name][0]} "
                         f"lacks {', '.join(PREFIX + name for name in missing)}")


def test_every_contract_that_lists_backends_lists_them_all() -> None:
    """A new contract that names two or more backends is held to the same rule (or added to VENDOR_LISTS)."""
    registered = set(backends.names())
    for name, contract in _contracts().items():
        for field, value in contract.items():
            if not isinstance(value, list) or name in VENDOR_LISTS and VENDOR_LISTS[name][0] == field:
                continue
            listed = _named_backends([item for item in value if isinstance(item, str)])
            if len(listed) >= 2:
                assert listed == registered, (f"pyproject.toml: contract {name!r} field {field} names backends "
                                              f"one by one but lacks {sorted(registered - listed)}")


def test_the_check_sees_a_forgotten_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend registered but absent from the lists is reported (what a sixth vendor would hit)."""
    monkeypatch.setitem(backends._REGISTRY, "enflame", "krakenplug.backends.enflame:EnflameBackend")
    for contract_name in VENDOR_LISTS:
        assert _missing(contract_name) == ["enflame"]

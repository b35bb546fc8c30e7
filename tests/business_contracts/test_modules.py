"""Each built-in module passes the sandbox checker, declares the dependencies it reads,
and every public function appears in the permission matrix of docs/permissions.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.execution.sandbox.checker import check_source
from node.execution.types import ContractRejected
from tests.business_contracts.world import BUSINESS_CONTRACTS, load_engine, source

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXPECTED_DEPENDENCIES = {
    "consortium": (),
    "records": ("consortium", "consent", "referral"),
    "consent": ("consortium", "records"),
    "referral": ("consortium", "consent", "records"),
    "audit": ("consortium", "records", "consent", "referral"),
}


@pytest.mark.parametrize("name", BUSINESS_CONTRACTS)
def test_module_passes_the_checker(name: str) -> None:
    checked = check_source(source(name))
    assert checked.dependencies == EXPECTED_DEPENDENCIES[name]
    assert checked.entry_points


def test_all_load_into_the_metered_engine() -> None:
    load_engine()


def test_lifecycle_names_are_not_shadowed() -> None:
    """consortium.deploy_contract/approve_contract are the node's native lifecycle."""
    entry_points = check_source(source("consortium")).entry_points
    assert not {"deploy_contract", "approve_contract"} & set(entry_points)
    assert '"contract/' not in source("consortium") and '"proposal/' not in source("consortium")


def test_permission_matrix_lists_every_public_function() -> None:
    text = (DOCS / "permissions.md").read_text("utf-8")
    documented = set(re.findall(r"^\| `(\w+)\.(\w+)`", text, flags=re.M))
    code = {
        (name, fn) for name in BUSINESS_CONTRACTS for fn in check_source(source(name)).entry_points
    }
    assert documented == code


def test_checker_still_refuses_a_broken_copy() -> None:
    with pytest.raises(ContractRejected):
        check_source(source("referral") + "\nclass Nope:\n    pass\n")

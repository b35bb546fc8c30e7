"""FHIR payloads: the shared Synthea fixture and our synthetic bundles validate as R4B
Bundles; invalid ones are refused with messages that name the place, not the value."""

from __future__ import annotations

import pytest

pytest.importorskip("fhir.resources", reason="fhir.resources (8.x) is not installed")

from node.records.errors import FhirValidationError
from node.records.fhir import synthetic_bundle, validate_bundle

from .conftest import fhir_fixture_dir


def test_shared_synthea_fixture_validates() -> None:
    path = fhir_fixture_dir() / "synthea-sample-bundle.json"
    if not path.is_file():
        pytest.skip(f"FHIR fixture not found at {path} (set MEDLEDGER_FHIR_FIXTURES)")
    bundle = validate_bundle(path.read_bytes())
    assert bundle.type == "transaction"
    kinds = [entry.resource.get_resource_type() for entry in bundle.entry or [] if entry.resource]
    assert {"Patient", "Encounter", "Condition"} <= set(kinds)


def test_synthetic_bundle_validates() -> None:
    bundle = validate_bundle(synthetic_bundle("p-1", note="follow up in 2 weeks"))
    kinds = [entry.resource.get_resource_type() for entry in bundle.entry or [] if entry.resource]
    assert kinds == ["Patient", "Encounter", "Condition"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "not JSON: Expecting property name"),
        (b"\x80abc", "not UTF-8 text"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"resourceType": "Patient"}', "is a 'Patient' resource"),
        (b'{"type": "collection"}', "has no 'resourceType'"),
        (b'{"resourceType": "Bundle", "type": "pile"}', "type: not a bundle-type code"),
        (b'{"resourceType": "Bundle"}', "type: Value for the field 'type' is required"),
    ],
)
def test_invalid_payloads_name_the_problem(payload: bytes, message: str) -> None:
    with pytest.raises(FhirValidationError, match=message):
        validate_bundle(payload)


def test_errors_never_echo_field_values() -> None:
    secret = "ZHANG-SAN-110101199003077777"
    bad = synthetic_bundle("p-1").replace(b'"1970-01-01"', f'"{secret}"'.encode())
    with pytest.raises(FhirValidationError) as info:
        validate_bundle(bad)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("entry.0.resource.birthDate: ")
    assert secret not in str(info.value) and secret not in repr(info.value.problems)

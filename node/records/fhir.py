"""FHIR payloads: check that a record payload is an R4B `Bundle`, and build synthetic ones.

Validation uses `fhir.resources` (its R4B models; the package's default models are R5).
Error messages name where and what is wrong, never the offending value: it may be
patient data, and errors end up in logs.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
from fhir.resources.R4B.bundle import Bundle

from node.records.errors import FhirValidationError

MEDIA_TYPE = "application/fhir+json"
MAX_PROBLEMS = 20
# Bundle.type is a required code (http://hl7.org/fhir/bundle-type); the model accepts any
# string, so the code list is checked here.
BUNDLE_TYPES = frozenset(
    {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    }
)


def validate_bundle(payload: bytes | str) -> Bundle:
    """The parsed Bundle, or FhirValidationError listing each problem."""
    try:
        doc = json.loads(payload)
    except UnicodeDecodeError:
        raise FhirValidationError("FHIR payload is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FhirValidationError(
            f"FHIR payload is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(doc, dict):
        raise FhirValidationError("FHIR payload must be a JSON object (a Bundle resource)")
    resource_type = doc.get("resourceType")
    if resource_type != "Bundle":
        raise FhirValidationError(
            f"FHIR payload is a {resource_type!r} resource; records carry a 'Bundle'"
            if isinstance(resource_type, str)
            else "FHIR payload has no 'resourceType': a record carries a 'Bundle'"
        )
    try:
        bundle = Bundle.model_validate(doc)
    except pydantic.ValidationError as exc:
        problems = tuple(_problem(err) for err in exc.errors(include_input=False))
        shown = "; ".join(problems[:MAX_PROBLEMS])
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise FhirValidationError(
            f"FHIR R4B Bundle is invalid: {len(problems)} problem(s): {shown}{more}", problems
        ) from None
    if bundle.type not in BUNDLE_TYPES:
        raise FhirValidationError(
            "FHIR R4B Bundle is invalid: type: not a bundle-type code "
            f"(use one of {', '.join(sorted(BUNDLE_TYPES))})",
            ("type: not a bundle-type code",),
        )
    return bundle


def _problem(err: Any) -> str:
    location = ".".join(str(part) for part in err.get("loc", ())) or "(bundle)"
    message = str(err.get("msg", "invalid")).splitlines()[0].strip()
    return f"{location}: {message}"


def synthetic_bundle(
    patient_id: str = "synthetic-patient-1",
    *,
    condition: str = "Essential hypertension",
    note: str | None = None,
) -> bytes:
    """A small R4B collection Bundle (Patient, Encounter, Condition) describing nobody:
    for demos and tests. `note` goes into Condition.note (tests put a canary there)."""
    patient_ref = f"Patient/{patient_id}"
    condition_resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"{patient_id}-condition-1",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "59621000", "display": condition}
            ],
            "text": condition,
        },
        "subject": {"reference": patient_ref},
        "encounter": {"reference": f"Encounter/{patient_id}-encounter-1"},
        "onsetDateTime": "2026-01-15T09:30:00+08:00",
    }
    if note is not None:
        condition_resource["note"] = [{"text": note}]
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{patient_id}",
                "resource": {
                    "resourceType": "Patient",
                    "id": patient_id,
                    "name": [{"family": "Synthetic", "given": ["Test"]}],
                    "gender": "unknown",
                    "birthDate": "1970-01-01",
                },
            },
            {
                "fullUrl": f"urn:uuid:{patient_id}-encounter-1",
                "resource": {
                    "resourceType": "Encounter",
                    "id": f"{patient_id}-encounter-1",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    },
                    "subject": {"reference": patient_ref},
                    "period": {
                        "start": "2026-01-15T09:00:00+08:00",
                        "end": "2026-01-15T09:40:00+08:00",
                    },
                },
            },
            {"fullUrl": f"urn:uuid:{patient_id}-condition-1", "resource": condition_resource},
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()

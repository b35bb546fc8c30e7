"""The referral workflow for integrators (DESIGN §7): the verbs of `medledger referral`,
`consult`, `followup` and `audit`, as Python functions.

    with Client("127.0.0.1:7050") as client:
        made = referral.create(client, doctor, patient="pt-…", kind="upward",
                               target_institution="hosp1", target_department="d01",
                               reason="chest pain, suspected ACS", consent="g…")
        referral.accept(client, hosp1_doctor, made["referral"])
        for event in referral.watch(client, hosp1_admin, "hosp1", from_height=1): ...

Free-text fields (department as the parties name it, reason, rejection, outcome, MDT
opinion, follow-up note) are sealed in this process to the referral's parties
(node/sdk/sealed.py): the requester, the target department's doctors, the MDT members,
and whoever writes the field. Never the regulator, whose reads return metadata only.

Transactions wait for their commit; a refused one raises `TxFailed` (its `result`
carries code and message), a refused query `Refused`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from node.sdk import sealed
from node.sdk.client import Client, ClientError, Identity

KINDS = ("upward", "downward", "horizontal", "consultation", "mdt")
AUDIT_TRACES = ("record", "referral", "patient", "identity")
# Contract field -> the name the SDK gives its plaintext.
SEALED_FIELDS = {
    "department_enc": "department_name",
    "reason_enc": "reason",
    "rejection_enc": "rejection",
    "outcome_enc": "outcome",
}


class Refused(ClientError):
    """A query the contract refused (permission or bad argument); `code` names which."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Committed:
    """A committed referral transaction: its id, height and the contract's result."""

    tx_id: str
    height: int
    result: Any


# -- plumbing ------------------------------------------------------------------------------


def _query(client: Client, identity: Identity, contract: str, fn: str, args: dict[str, Any]) -> Any:
    try:
        return client.query(identity, contract, fn, args)
    except ClientError as exc:
        text = str(exc)
        if not text.startswith("query refused: "):
            raise
        code, _, message = text[len("query refused: ") :].partition(": ")
        raise Refused(message or text, code) from None


def _commit(
    client: Client, identity: Identity, fn: str, args: dict[str, Any], contract: str = "referral"
) -> Committed:
    res = client.submit(identity, contract, fn, args, wait=True)
    return Committed(res.tx_id, res.height, client.result_of(res))


def _transition(committed: Committed) -> dict[str, Any]:
    result = committed.result
    out = {
        "referral": result["id"],
        "status": result["status"],
        "applied": result["applied"],
        "tx_id": committed.tx_id,
        "height": committed.height,
    }
    if not result["applied"]:
        out["reason"] = result.get("reason", "")
    return out


def department_doctors(
    client: Client, identity: Identity, institution: str, dept: str
) -> list[str]:
    doctors: list[str] = _query(
        client,
        identity,
        "consortium",
        "list_doctors",
        {"institution": institution, "department": dept},
    )
    return doctors


def parties(client: Client, identity: Identity, ref: dict[str, Any]) -> list[str]:
    """Who a referral's sealed fields are for: the caller (who writes the field), the
    requester, the target department's doctors as registered now, the MDT members."""
    doctors = department_doctors(
        client, identity, ref["target_institution"], ref["target_department"]
    )
    return list(dict.fromkeys([identity.id, ref["requester"], *doctors, *ref["mdt_members"]]))


def _seal(client: Client, identity: Identity, text: str | None, party_ids: Sequence[str]) -> str:
    return sealed.seal_text(client, identity, text, party_ids) if text else ""


def _share(
    client: Client, identity: Identity, ref: dict[str, Any], to: Sequence[str], read_via: str
) -> dict[str, list[str]]:
    """Wraps the key of each record the referral lists for `to` (node/sdk/records.py).
    The caller must read the record first: as its owner or patient (`read_via` ""), or
    through the referral named by `read_via` (e.g. the one that brought it the record)."""
    wanted = [who for who in to if who != identity.id]
    if not ref["records"] or not wanted:
        return {}
    from node.sdk import records as records_sdk

    return {
        rid: list(records_sdk.share(client, identity, rid, wanted, referral=read_via))
        for rid in ref["records"]
    }


# -- transitions ---------------------------------------------------------------------------


def create(
    client: Client,
    identity: Identity,
    *,
    patient: str,
    kind: str,
    target_institution: str,
    target_department: str,
    reason: str,
    department_name: str | None = None,
    records: Sequence[str] = (),
    consent: str = "",
    break_glass: bool = False,
    respond_within_ms: int | None = None,
    mdt_members: Sequence[str] = (),
    mdt_required: int = 0,
    referral_id: str = "",
    read_via: str = "",
) -> dict[str, Any]:
    """Refers `patient` (-> requested); then wraps the keys of `records` for the target
    department's doctors. `department_name` (sealed) defaults to the department's code.
    `read_via`: the referral through which the caller itself reads `records` when it is
    neither their owner nor the patient (a doctor passing a referred patient on)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    doctors = department_doctors(client, identity, target_institution, target_department)
    party_ids = list(dict.fromkeys([identity.id, *doctors, *mdt_members]))
    args: dict[str, Any] = {
        "patient": patient,
        "kind": kind,
        "target_institution": target_institution,
        "target_department": target_department,
        "department_enc": _seal(client, identity, department_name or target_department, party_ids),
        "reason_enc": _seal(client, identity, reason, party_ids),
        "records": list(records),
        "consent": consent,
        "break_glass": break_glass,
        "mdt_members": list(mdt_members),
        "mdt_required": mdt_required,
        "referral_id": referral_id,
    }
    if respond_within_ms is not None:
        args["respond_within_ms"] = respond_within_ms
    committed = _commit(client, identity, "create", args)
    ref = committed.result
    return {
        "referral": ref["id"],
        "status": ref["status"],
        "kind": ref["kind"],
        "patient": ref["patient"],
        "target_institution": ref["target_institution"],
        "target_department": ref["target_department"],
        "deadline": ref["deadline"],
        "break_glass": ref["break_glass"],
        "parties": party_ids,
        "shared": _share(client, identity, ref, doctors, read_via),
        "tx_id": committed.tx_id,
        "height": committed.height,
    }


def consult_request(
    client: Client,
    identity: Identity,
    *,
    kind: str = "consultation",
    mdt_members: Sequence[str] = (),
    mdt_required: int = 0,
    **create_args: Any,
) -> dict[str, Any]:
    """A remote consultation (会诊) or an MDT: `create` with kind consultation or mdt."""
    if kind not in ("consultation", "mdt"):
        raise ValueError("a consult is of kind 'consultation' or 'mdt'")
    return create(
        client,
        identity,
        kind=kind,
        mdt_members=mdt_members,
        mdt_required=mdt_required,
        **create_args,
    )


def receive(client: Client, identity: Identity, referral_id: str) -> dict[str, Any]:
    return _transition(_commit(client, identity, "receive", {"referral_id": referral_id}))


def accept(client: Client, identity: Identity, referral_id: str) -> dict[str, Any]:
    """Accepts (-> accepted); the accepting doctor then wraps the referred records' keys
    for the MDT members, if any."""
    out = _transition(_commit(client, identity, "accept", {"referral_id": referral_id}))
    if out["applied"]:
        ref = _query(client, identity, "referral", "get", {"referral_id": referral_id})
        out["shared"] = _share(client, identity, ref, ref["mdt_members"], referral_id)
    return out


def reject(
    client: Client, identity: Identity, referral_id: str, reason: str | None = None
) -> dict[str, Any]:
    enc = _sealed_for_referral(client, identity, referral_id, reason)
    args = {"referral_id": referral_id, "rejection_enc": enc}
    return _transition(_commit(client, identity, "reject", args))


def start(client: Client, identity: Identity, referral_id: str) -> dict[str, Any]:
    return _transition(_commit(client, identity, "start", {"referral_id": referral_id}))


def complete(
    client: Client, identity: Identity, referral_id: str, outcome: str | None = None
) -> dict[str, Any]:
    enc = _sealed_for_referral(client, identity, referral_id, outcome)
    args = {"referral_id": referral_id, "outcome_enc": enc}
    return _transition(_commit(client, identity, "complete", args))


def cancel(client: Client, identity: Identity, referral_id: str) -> dict[str, Any]:
    return _transition(_commit(client, identity, "cancel", {"referral_id": referral_id}))


def consult_sign(
    client: Client, identity: Identity, referral_id: str, opinion: str | None = None
) -> dict[str, Any]:
    """An MDT member signs off, with an optional opinion sealed to the parties."""
    enc = _sealed_for_referral(client, identity, referral_id, opinion)
    args = {"referral_id": referral_id, "opinion_enc": enc}
    return _transition(_commit(client, identity, "sign", args))


def followup_add(
    client: Client,
    identity: Identity,
    referral_id: str,
    note: str | None = None,
    record_id: str = "",
) -> dict[str, Any]:
    """A follow-up after a downward referral: a record id and/or a sealed note."""
    enc = _sealed_for_referral(client, identity, referral_id, note)
    args = {"referral_id": referral_id, "record_id": record_id, "note_enc": enc}
    return _transition(_commit(client, identity, "followup_add", args))


def _sealed_for_referral(
    client: Client, identity: Identity, referral_id: str, text: str | None
) -> str:
    if not text:
        return ""
    ref = _query(client, identity, "referral", "get", {"referral_id": referral_id})
    return sealed.seal_text(client, identity, text, parties(client, identity, ref))


# -- reads ---------------------------------------------------------------------------------


def get(
    client: Client, identity: Identity, referral_id: str, keep_ciphertext: bool = False
) -> dict[str, Any]:
    """The referral with every sealed field the caller can open in plaintext (None for
    the others, whose names are listed under `sealed`), and its follow-ups."""
    ref: dict[str, Any] = _query(client, identity, "referral", "get", {"referral_id": referral_id})
    unreadable: list[str] = []

    def reveal(holder: dict[str, Any], field: str, name: str) -> None:
        value = holder.get(field) if keep_ciphertext else holder.pop(field, None)
        if not value:
            holder[name] = None
            return
        holder[name] = sealed.try_open(identity, value)
        if holder[name] is None:
            unreadable.append(name)

    for field, name in SEALED_FIELDS.items():
        reveal(ref, field, name)
    for signature in ref.get("signatures", {}).values():
        reveal(signature, "opinion_enc", "opinion")
    if ref.get("followups") and identity_role(identity) != "regulator":
        entries = _query(client, identity, "referral", "followups", {"referral_id": referral_id})
        for entry in entries:
            reveal(entry, "note_enc", "note")
        ref["followup_entries"] = entries
    ref["sealed"] = sorted(set(unreadable))
    return ref


def inbox(
    client: Client, identity: Identity, department: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Referrals addressed to a department of the caller's institution (a doctor's own
    department by default)."""
    if department is None:
        info = _query(client, identity, "consortium", "get_identity", {"identity": identity.id})
        registration = (info or {}).get("registration") or {}
        department = registration.get("department")
        if not department:
            raise ClientError("name the department (the caller is not a registered doctor)")
    items: list[dict[str, Any]] = _query(
        client, identity, "referral", "inbox", {"department": department, "limit": limit}
    )
    return items


def audit_trace(
    client: Client, identity: Identity, what: str, ident: str, offset: int = 0, limit: int = 100
) -> dict[str, Any]:
    """The regulator's trace of a record, referral, patient pseudonym or identity."""
    if what not in AUDIT_TRACES:
        raise ValueError(f"trace one of {', '.join(AUDIT_TRACES)}")
    arg = {"record": "record_id", "referral": "referral_id"}.get(what, what)
    args = {arg: ident, "offset": offset, "limit": limit}
    page: dict[str, Any] = _query(client, identity, "audit", "trace_" + what, args)
    return page


def audit_stats(client: Client, identity: Identity) -> dict[str, Any]:
    stats: dict[str, Any] = _query(client, identity, "audit", "stats", {})
    return stats


def audit_flags(
    client: Client, identity: Identity, offset: int = 0, limit: int = 100
) -> dict[str, Any]:
    page: dict[str, Any] = _query(
        client, identity, "audit", "flags", {"offset": offset, "limit": limit}
    )
    return page


# -- events for integrators (a hospital's HIS) ---------------------------------------------


def watch(
    client: Client, identity: Identity, institution: str | None = None, from_height: int = 1
) -> Iterator[dict[str, Any]]:
    """Referral events addressed to `institution` (default: the identity's own), from
    `from_height` on, waiting for new blocks; resume after a restart from the last
    event's `height` + 1. Each: height, tx_id, event name and the contract's data
    (referral id, kind, status, action, patient pseudonym, institutions, tiers)."""
    import json

    target = institution or identity_institution(identity)
    for event in client.stream_events(from_height, contract="referral", identity=identity):
        data = json.loads(event.data) if event.data else {}
        if data.get("target_institution") != target:
            continue
        yield {"height": event.height, "tx_id": event.tx_id.hex(), "event": event.name, **data}


def _subject_attribute(identity: Identity, oid_name: str) -> str:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(identity.certificate_der)
    oid = getattr(x509.NameOID, oid_name)
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def identity_institution(identity: Identity) -> str:
    """The institution named in the identity's certificate (O)."""
    return _subject_attribute(identity, "ORGANIZATION_NAME")


def identity_role(identity: Identity) -> str:
    """The role named in the identity's certificate (OU)."""
    return _subject_attribute(identity, "ORGANIZATIONAL_UNIT_NAME")

"""Membership, encryption keys and consent for integrators and the CLI (DESIGN §2, §6).

    admin = Identity.load("consortium/identities/hosp1-admin")
    with Client("127.0.0.1:7050") as client:
        hosp1 = Consortium(client, admin)
        hosp1.register_department("d07", "Cardiology")
        hosp1.register_doctor("hosp1-doctor3", name="Dr. Example", department="d07")

A `Consortium` is the consortium as seen by one calling identity. Every write waits for
its block and returns a `Committed` (the transaction's outcome and the contract
function's result), or raises `TxFailed` naming the code and the contract's message.
Arguments that name another identity take a 64-hex identity id, an identity folder (or
its cert.pem), or a folder name of an init-consortium layout; `resolve_identity` is the
one place that turns them into an id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from node.crypto.certs import load_pem_certificate_der
from node.records.suites import DEFAULT_SUITE, HpkeSuite
from node.sdk import identity_keys
from node.sdk.client import Client, ClientError, Identity, SubmitResult, TxFailed

IDENTITY_ID = re.compile(r"[0-9a-fA-F]{64}")
INSTITUTION_GRANTEE = "institution:"
IDENTITIES_FOLDER = "identities"


class NotFound(ClientError):
    """The chain answered, and what was asked for is not there (the answer is no)."""


class KeyNotVerified(ClientError):
    """A registered encryption key whose signature does not check against the
    identity's certificate: never wrap a record key for it."""


# -- naming identities ------------------------------------------------------------------


def consortium_root_of(identity: Identity) -> Path | None:
    """The init-consortium folder an identity was loaded from (`<root>/identities/<name>`)."""
    folder = identity.folder
    if folder is not None and folder.resolve().parent.name == IDENTITIES_FOLDER:
        return folder.resolve().parent.parent
    return None


def _certificate_id(path: Path) -> str:
    try:
        der = load_pem_certificate_der(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ClientError(f"{path} is not a readable PEM certificate: {exc}") from None
    return hashlib.sha256(der).hexdigest()


def resolve_identity(ref: str, consortium: Path | None = None) -> str:
    """The on-chain id of `ref`: a 64-hex id (returned lower-cased), an identity folder
    or certificate file, or a folder name under `<consortium>/identities/` (or under
    `consortium` itself when it is the identities folder). Only cert.pem is read."""
    if IDENTITY_ID.fullmatch(ref):
        return ref.lower()
    candidates = [Path(ref)]
    if consortium is not None and ref and Path(ref).name == ref:
        candidates += [consortium / IDENTITIES_FOLDER / ref, consortium / ref]
    for path in candidates:
        if path.is_file():
            return _certificate_id(path)
        if (path / "cert.pem").is_file():
            return _certificate_id(path / "cert.pem")
    looked = ", ".join(str(p) for p in dict.fromkeys(candidates))
    raise ClientError(
        f"{ref!r} is neither a 64-hex identity id nor an identity folder "
        f"(no cert.pem in {looked}); give the id, the folder, or --consortium DIR"
    )


def resolve_grantee(ref: str, consortium: Path | None = None) -> str:
    """A consent grantee: `institution:<id>` as it is, anything else as an identity."""
    if ref.startswith(INSTITUTION_GRANTEE):
        return ref
    return resolve_identity(ref, consortium)


def role_of(identity: Identity) -> str:
    """The role in the identity's certificate (OU), e.g. "patient"; "" if it has none."""
    cert = x509.load_der_x509_certificate(identity.certificate_der)
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    value = values[0].value if values else ""
    return value if isinstance(value, str) else value.decode()


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Committed:
    """A transaction committed as VALID and what its contract function returned."""

    tx: SubmitResult
    result: Any

    def to_json(self) -> dict[str, Any]:
        return {**self.tx.to_json(), "result": self.result}


@dataclass(frozen=True)
class ConsentGrant(Committed):
    """A committed grant; `shared` lists, per record, the identities its data key was
    wrapped for, and `share_errors` the records whose key could not be shared."""

    shared: dict[str, list[str]] = field(default_factory=dict)
    share_errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["shared"] = self.shared
        if self.share_errors:
            out["share_errors"] = self.share_errors
        return out


# -- the API ----------------------------------------------------------------------------


class Consortium:
    def __init__(self, client: Client, identity: Identity, root: Path | None = None) -> None:
        self.client = client
        self.identity = identity
        self.root = root if root is not None else consortium_root_of(identity)

    def resolve(self, ref: str) -> str:
        return resolve_identity(ref, self.root)

    def _commit(self, contract: str, function: str, args: Mapping[str, Any]) -> Committed:
        res = self.client.submit(self.identity, contract, function, args, wait=True)
        return self._finish(res)

    def _finish(self, res: SubmitResult) -> Committed:
        if res.status == "pending":
            res = self.client.wait_for(res)
        return Committed(res, self.client.result_of(res))

    def _query(self, contract: str, function: str, args: Mapping[str, Any]) -> Any:
        return self.client.query(self.identity, contract, function, args)

    # institutions (the leader)

    def admit_institution(self, institution: str, name: str, tier: str, region: str) -> Committed:
        args = {"institution": institution, "name": name, "tier": tier, "region": region}
        return self._commit("consortium", "admit_institution", args)

    def suspend_institution(self, institution: str, reason: str = "") -> Committed:
        args = {"institution": institution, "reason": reason}
        return self._commit("consortium", "suspend_institution", args)

    def reinstate_institution(self, institution: str) -> Committed:
        return self._commit("consortium", "reinstate_institution", {"institution": institution})

    def institution(self, institution: str) -> Any:
        found = self._query("consortium", "get_institution", {"institution": institution})
        if found is None:
            raise NotFound(f"no institution {institution!r} in the consortium")
        return found

    # departments, doctors, patients (an institution's admin)

    def register_department(
        self, department: str, name: str, accepts_referrals: bool = True
    ) -> Committed:
        args = {"department": department, "name": name, "accepts_referrals": accepts_referrals}
        return self._commit("consortium", "register_department", args)

    def register_doctor(self, doctor: str, name: str, department: str) -> Committed:
        args = {"identity": self.resolve(doctor), "name": name, "department": department}
        return self._commit("consortium", "register_doctor", args)

    def register_patient(self, patient: str, pseudonym: str) -> Committed:
        args = {"identity": self.resolve(patient), "pseudonym": pseudonym}
        return self._commit("consortium", "register_patient", args)

    def revoke(self, target: str, reason: str = "") -> Committed:
        """Revokes a certificate identity: refused by contracts from the next
        transaction, by every node from the next block."""
        args = {"identity": self.resolve(target), "reason": reason}
        return self._commit("consortium", "revoke", args)

    def identity_info(self, target: str) -> Any:
        return self._query("consortium", "get_identity", {"identity": self.resolve(target)})

    # encryption keys (each identity its own)

    def register_key(self) -> Committed:
        return self._finish(identity_keys.register(self.client, self.identity))

    def rotate_key(self, suite: HpkeSuite = DEFAULT_SUITE) -> Committed:
        """A new key pair, the old private key archived in the folder. If an earlier
        rotation made a pair that never reached the chain, that pair is registered
        instead of making another one (`suite` is then the pair's own)."""
        me = self.identity.id
        record = self._query("consortium", "get_key", {"identity": me})
        if record is None:
            raise NotFound("no encryption key registered for this identity: run keys register")
        chain_id = self.client.chain_id()
        on_chain = identity_keys.verify_registration(record, me, chain_id)
        local = identity_keys.current_public_key(self.identity)
        held = identity_keys.private_keys(self.identity)
        if on_chain.fingerprint() != local.fingerprint() and on_chain.fingerprint() in held:
            args = identity_keys.registration_args(self.identity, chain_id, local)
            return self._commit("consortium", "rotate_key", args)
        return self._finish(identity_keys.rotate(self.client, self.identity, suite))

    def show_key(self, who: str | None = None) -> dict[str, Any]:
        """`who`'s current key and every earlier version, each checked against the
        identity's certificate; for the caller's own key, whether its folder still holds
        each private key."""
        target = self.resolve(who) if who else self.identity.id
        record = self._query("consortium", "get_key", {"identity": target})
        if record is None:
            raise NotFound(f"identity {target[:16]}… has registered no encryption key")
        history = self._query("consortium", "key_history", {"identity": target}) or []
        held = identity_keys.private_keys(self.identity) if target == self.identity.id else None
        chain_id = self.client.chain_id()

        def describe(entry: Mapping[str, Any]) -> dict[str, Any]:
            try:
                public = identity_keys.verify_registration(entry, target, chain_id)
            except ClientError as exc:
                raise KeyNotVerified(f"version {entry.get('version')}: {exc}") from None
            out = {
                "version": entry["version"],
                "suite": entry["suite"],
                "fingerprint": public.fingerprint().hex(),
                "registered_at": entry["registered_at"],
                "verified": True,
            }
            if held is not None:
                out["private_key_held"] = public.fingerprint() in held
            return out

        return {"identity": target, **describe(record), "history": [describe(h) for h in history]}

    # consent (a patient, or a doctor for records it owns)

    def grant_consent(
        self,
        grantee: str,
        records: str | Sequence[str],
        purpose: str,
        expires_at: int,
        grant_id: str = "",
    ) -> ConsentGrant:
        """Grants access and, for named records and an identity grantee, wraps each
        record's data key for the grantee into the record's vault
        (`node.sdk.records.share`). A grant stays committed if sharing fails: the
        failures are in `share_errors`, and the grantee cannot read those records yet."""
        target = resolve_grantee(grantee, self.root)
        listed = records if isinstance(records, str) else list(records)
        args = {
            "grantee": target,
            "records": listed,
            "purpose": purpose,
            "expires_at": expires_at,
            "grant_id": grant_id,
        }
        done = self._commit("consent", "grant", args)
        shared: dict[str, list[str]] = {}
        errors: dict[str, str] = {}
        if isinstance(listed, list) and listed and not target.startswith(INSTITUTION_GRANTEE):
            shared, errors = self._share(listed, target)
        return ConsentGrant(done.tx, done.result, shared, errors)

    def _share(
        self, record_ids: list[str], grantee: str
    ) -> tuple[dict[str, list[str]], dict[str, str]]:
        from node.sdk import records as records_sdk

        shared: dict[str, list[str]] = {}
        errors: dict[str, str] = {}
        for record_id in record_ids:
            try:
                shared[record_id] = list(
                    records_sdk.share(self.client, self.identity, record_id, [grantee])
                )
            except Exception as exc:  # one record's failure must not hide the others'
                errors[record_id] = f"{type(exc).__name__}: {exc}"
        return shared, errors

    def revoke_consent(self, grant_id: str) -> Committed:
        return self._commit("consent", "revoke", {"grant_id": grant_id})

    def patient_pseudonym(self, patient: str) -> str:
        info = self.identity_info(patient)
        registration = info.get("registration") if isinstance(info, dict) else None
        if not registration or registration.get("role") != "patient":
            raise NotFound(f"{patient!r} is not a registered patient")
        return str(registration["pseudonym"])

    def list_consent(
        self,
        patient: str | None = None,
        pseudonym: str | None = None,
        received: bool = False,
    ) -> dict[str, Any]:
        """Grants about a patient (`patient` names the identity, `pseudonym` the chain's
        name for it), or the grants naming the caller (`received`). By default a patient
        lists the grants about itself and anyone else the grants it received."""
        if patient:
            pseudonym = self.patient_pseudonym(patient)
        if not pseudonym and not received and role_of(self.identity) == "patient":
            pseudonym = self.patient_pseudonym(self.identity.id)
        if pseudonym and not received:
            ids = self._query("consent", "list_for_patient", {"patient": pseudonym})
        else:
            pseudonym = None
            ids = self._query("consent", "list_for_grantee", {})
        grants = [self._query("consent", "get", {"grant_id": g}) for g in ids]
        return {"patient": pseudonym, "count": len(grants), "grants": grants}


__all__ = [
    "Committed",
    "ConsentGrant",
    "Consortium",
    "KeyNotVerified",
    "NotFound",
    "TxFailed",
    "consortium_root_of",
    "resolve_grantee",
    "resolve_identity",
    "role_of",
]

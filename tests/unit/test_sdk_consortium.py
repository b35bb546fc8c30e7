"""node.sdk.consortium without a node: naming identities, and how a consent grant hands
record keys to `node.sdk.records.share` (replaced here by a recording stand-in)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

import node.sdk
from node.cli.main import build_parser
from node.sdk.client import Client, ClientError, Identity, SubmitResult
from node.sdk.consortium import (
    Consortium,
    consortium_root_of,
    resolve_grantee,
    resolve_identity,
    role_of,
)


@pytest.fixture
def doctor_id(identities: Callable[[str], Identity]) -> str:
    return identities("hosp2-doctor1").id


def test_a_hex_id_is_taken_as_it_is_lower_cased(doctor_id: str) -> None:
    assert resolve_identity(doctor_id) == doctor_id
    assert resolve_identity(doctor_id.upper()) == doctor_id


def test_a_folder_or_its_certificate_names_its_identity(consortium: Path, doctor_id: str) -> None:
    folder = consortium / "identities" / "hosp2-doctor1"
    assert resolve_identity(str(folder)) == doctor_id
    assert resolve_identity(str(folder / "cert.pem")) == doctor_id


def test_a_folder_name_is_looked_up_in_the_consortium(consortium: Path, doctor_id: str) -> None:
    assert resolve_identity("hosp2-doctor1", consortium) == doctor_id
    assert resolve_identity("hosp2-doctor1", consortium / "identities") == doctor_id


def test_an_unknown_name_says_where_it_looked(
    consortium: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ClientError, match="neither a 64-hex identity id") as err:
        resolve_identity("hosp2-doctor9", consortium)
    assert str(consortium / "identities" / "hosp2-doctor9") in str(err.value)
    with pytest.raises(ClientError, match="--consortium DIR"):
        resolve_identity("hosp2-doctor1")  # no consortium to look in
    with pytest.raises(ClientError, match="neither"):
        resolve_identity("ab" * 31)  # 62 hex digits: not an id, not a folder


def test_a_bad_certificate_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(ClientError, match="not a readable PEM certificate"):
        resolve_identity(str(tmp_path))


def test_grantees_and_roles(
    consortium: Path, doctor_id: str, identities: Callable[[str], Identity]
) -> None:
    assert resolve_grantee("institution:hosp2", consortium) == "institution:hosp2"
    assert resolve_grantee("hosp2-doctor1", consortium) == doctor_id
    assert role_of(identities("hosp1-patient1")) == "patient"
    assert role_of(identities("hosp1-admin")) == "institution"


def test_the_callers_folder_tells_the_consortium(
    consortium: Path, identities: Callable[[str], Identity]
) -> None:
    admin = identities("hosp1-admin")
    assert consortium_root_of(admin) == consortium.resolve()
    assert consortium_root_of(Identity("x", admin.key, admin.certificate_der)) is None


class FakeClient:
    """Commits everything; the result is the arguments, as a grant would echo them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def submit(
        self, identity: Identity, contract: str, function: str, args: Mapping[str, Any], wait: bool
    ) -> SubmitResult:
        self.calls.append((contract, function, dict(args)))
        return SubmitResult("ab" * 32, "committed", "VALID", "", 7)

    def result_of(self, res: SubmitResult) -> Any:
        return {"id": "g1", **self.calls[-1][2]}


@pytest.fixture
def shares(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """Replaces node.sdk.records with a stand-in whose share records its calls and
    fails for record "r-bad"."""
    seen: list[tuple[str, list[str]]] = []

    def share(
        client: Client, identity: Identity, record_id: str, recipients: Sequence[str]
    ) -> list[str]:
        if record_id == "r-bad":
            raise ClientError("the vault node is unreachable")
        seen.append((record_id, list(recipients)))
        return [f"{record_id}/{r[:8]}" for r in recipients]

    fake = types.ModuleType("node.sdk.records")
    fake.share = share  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "node.sdk.records", fake)
    monkeypatch.setattr(node.sdk, "records", fake, raising=False)
    return seen


def test_a_grant_of_named_records_shares_each_key_with_the_grantee(
    identities: Callable[[str], Identity], doctor_id: str, shares: list[tuple[str, list[str]]]
) -> None:
    client = FakeClient()
    patient = Consortium(cast(Client, client), identities("hosp1-patient1"))
    done = patient.grant_consent("hosp2-doctor1", ["r-1", "r-bad", "r-2"], "referral", 10**13)
    assert client.calls[0][:2] == ("consent", "grant")
    assert client.calls[0][2]["grantee"] == doctor_id
    assert shares == [("r-1", [doctor_id]), ("r-2", [doctor_id])]
    assert set(done.shared) == {"r-1", "r-2"}
    assert "unreachable" in done.share_errors["r-bad"]
    assert done.to_json()["share_errors"] == done.share_errors


def test_no_key_is_shared_for_all_records_or_an_institution(
    identities: Callable[[str], Identity], shares: list[tuple[str, list[str]]]
) -> None:
    patient = Consortium(cast(Client, FakeClient()), identities("hosp1-patient1"))
    assert patient.grant_consent("hosp2-doctor1", "*", "treatment", 10**13).shared == {}
    grant = patient.grant_consent("institution:hosp2", ["r-1"], "referral", 10**13)
    assert grant.shared == {} and grant.share_errors == {} and shares == []
    assert "share_errors" not in grant.to_json()


def test_every_verb_parses() -> None:
    parser = build_parser()
    common = ["--node", "127.0.0.1:1", "--identity", "x", "--json"]
    verbs = [
        ["institution", "admit", "--institution", "h", "--name", "n", "--tier", "primary"],
        ["institution", "suspend", "--institution", "h", "--reason", "why"],
        ["institution", "reinstate", "--institution", "h"],
        ["department", "register", "--department", "d1", "--name", "n", "--no-referrals"],
        ["doctor", "register", "--doctor", "d", "--name", "n", "--department", "d1"],
        ["patient", "register", "--patient", "p", "--pseudonym", "pt-12345678"],
        ["identity", "revoke", "--target", "t"],
        ["keys", "register"],
        ["keys", "rotate", "--suite", "X25519"],
        ["keys", "show", "--of", "t"],
        ["consent", "grant", "--grantee", "g", "--records", "*", "--purpose", "referral"],
        ["consent", "revoke", "--grant", "g1"],
        ["consent", "list", "--received"],
    ]
    for verb in verbs:
        extra = ["--region", "r"] if verb[1] == "admit" else []
        assert parser.parse_args(verb + extra + common).handler is not None
    with pytest.raises(SystemExit):
        parser.parse_args(["consent", "list", "--received", "--pseudonym", "p", *common])

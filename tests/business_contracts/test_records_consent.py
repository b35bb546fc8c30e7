"""records and consent: role × action, allowed and denied."""

from __future__ import annotations

import pytest

from tests.business_contracts.world import (
    LEADER,
    REGULATOR,
    Chain,
    admin,
    doctor,
    patient,
    pseudonym,
    put_record,
)

P3 = pseudonym("hosp3")
DAY = 86_400_000


@pytest.fixture
def rec(chain: Chain) -> Chain:
    """hosp3-doctor1 uploads record rec-1 of hosp3-patient1."""
    put_record(chain, doctor("hosp3"), "rec-1", P3)
    return chain


def test_put_stores_only_allow_listed_fields(chain: Chain) -> None:
    record = put_record(chain, doctor("hosp3"), "rec-1", P3)
    assert set(record) == {
        "id",
        "owner",
        "owner_institution",
        "patient",
        "content_hash",
        "size",
        "media_type",
        "vault_node",
        "created_at",
        "status",
    }
    assert record["owner"] == doctor("hosp3").identity
    stored = chain.value("records", "record/rec-1")
    assert stored == record
    assert chain.events_named("record_put") == [
        {
            "record": "rec-1",
            "owner": doctor("hosp3").identity,
            "patient": P3,
            "institution": "hosp3",
        }
    ]


@pytest.mark.parametrize("who", [patient("hosp3"), admin("hosp3"), REGULATOR, LEADER])
def test_only_doctors_put(chain: Chain, who) -> None:
    chain.denied(
        who,
        "records",
        "put",
        record_id="r",
        patient=P3,
        content_hash="a" * 64,
        size=1,
        media_type="application/pdf",
        vault_node="hosp3",
    )


def test_put_validation(chain: Chain) -> None:
    d = doctor("hosp3")
    good = {
        "record_id": "r",
        "patient": P3,
        "content_hash": "a" * 64,
        "size": 1,
        "media_type": "application/pdf",
        "vault_node": "hosp3",
    }
    for bad in (
        {"patient": "PSN-nobody-000"},
        {"content_hash": "A" * 64},
        {"content_hash": "a" * 63},
        {"size": -1},
        {"size": True},
        {"media_type": "pdf"},
        {"vault_node": "hosp1"},  # ciphertext goes to the uploader's own node
        {"record_id": "a/b"},
    ):
        chain.error(d, "records", "put", **{**good, **bad})
    chain.ok(d, "records", "put", **good)
    chain.error(d, "records", "put", **good)  # duplicate id


def test_owner_and_patient_read_without_grant(rec: Chain) -> None:
    assert rec.ok(doctor("hosp3"), "records", "access", record_id="rec-1")["basis"] == "owner"
    assert rec.ok(patient("hosp3"), "records", "access", record_id="rec-1")["basis"] == "patient"
    accesses = rec.events_named("access")
    assert [a["reader"] for a in accesses] == [doctor("hosp3").identity, patient("hosp3").identity]
    assert accesses[0]["vault_node"] == "hosp3"
    assert rec.value("records", "histn/record/rec-1") == 3  # put + two accesses


def test_other_hospital_doctor_needs_a_grant(rec: Chain) -> None:
    other = doctor("hosp1")
    rec.denied(other, "records", "access", record_id="rec-1")
    # A colleague in the owner's own institution needs a grant too (ownership is the doctor's).
    rec.denied(doctor("hosp3", 2), "records", "access", record_id="rec-1")
    rec.denied(patient("hosp3", 2), "records", "access", record_id="rec-1")
    rec.denied(REGULATOR, "records", "access", record_id="rec-1")
    rec.denied(admin("hosp3"), "records", "access", record_id="rec-1")
    grant = rec.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee=other.identity,
        records=["rec-1"],
        purpose="treatment",
        expires_at=rec.now + DAY,
    )
    rec.denied(doctor("hosp1", 2), "records", "access", record_id="rec-1", grant=grant["id"])
    assert (
        rec.ok(other, "records", "access", record_id="rec-1", grant=grant["id"])["basis"]
        == "grant:" + grant["id"]
    )


def test_revoked_grant_stops_the_next_access(rec: Chain) -> None:
    other = doctor("hosp1")
    g = rec.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee=other.identity,
        records="*",
        purpose="treatment",
        expires_at=rec.now + DAY,
        grant_id="g-1",
    )
    rec.ok(other, "records", "access", record_id="rec-1", grant="g-1")
    rec.denied(other, "consent", "revoke", grant_id="g-1")  # the grantee cannot revoke
    rec.denied(doctor("hosp3"), "consent", "revoke", grant_id="g-1")  # nor a non-granter
    rec.ok(patient("hosp3"), "consent", "revoke", grant_id="g-1")
    assert "revoked" in rec.denied(other, "records", "access", record_id="rec-1", grant="g-1")
    assert rec.events_named("consent_revoked") == [
        {"grant": "g-1", "grantee": other.identity, "patient": P3}
    ]
    assert g["records"] == "*"
    rec.error(patient("hosp3"), "consent", "revoke", grant_id="g-1")


def test_expired_grant_and_institution_grant(rec: Chain) -> None:
    rec.ok(
        doctor("hosp3"),
        "consent",
        "grant",
        grantee="institution:hosp2",
        records=["rec-1"],
        purpose="consultation",
        expires_at=rec.now + 5000,
        grant_id="g-inst",
    )
    rec.ok(doctor("hosp2", 2), "records", "access", record_id="rec-1", grant="g-inst")
    rec.denied(doctor("hosp1"), "records", "access", record_id="rec-1", grant="g-inst")
    rec.denied(patient("hosp2"), "records", "access", record_id="rec-1", grant="g-inst")
    rec.now += 10_000
    assert "expired" in rec.denied(
        doctor("hosp2"), "records", "access", record_id="rec-1", grant="g-inst"
    )


def test_grant_rules(rec: Chain) -> None:
    put_record(rec, doctor("hosp3"), "rec-p2", pseudonym("hosp3", 2))
    exp = rec.now + DAY
    # A doctor grants only records it owns, never "*"; a patient only its own records.
    rec.denied(
        doctor("hosp3", 2),
        "consent",
        "grant",
        grantee=doctor("hosp1").identity,
        records=["rec-1"],
        purpose="treatment",
        expires_at=exp,
    )
    rec.denied(
        doctor("hosp3"),
        "consent",
        "grant",
        grantee=doctor("hosp1").identity,
        records="*",
        purpose="treatment",
        expires_at=exp,
    )
    rec.error(
        patient("hosp3"),
        "consent",
        "grant",
        grantee=doctor("hosp1").identity,
        records=["rec-p2"],
        purpose="treatment",
        expires_at=exp,
    )
    rec.error(
        doctor("hosp3"),
        "consent",
        "grant",
        grantee=doctor("hosp1").identity,
        records=["rec-1", "rec-p2"],
        purpose="treatment",
        expires_at=exp,
    )
    # The regulator never becomes a grantee; purposes, expiry and grantees are checked.
    rec.denied(
        patient("hosp3"),
        "consent",
        "grant",
        grantee=REGULATOR.identity,
        records="*",
        purpose="treatment",
        expires_at=exp,
    )
    for bad in (
        {"purpose": "marketing"},
        {"expires_at": rec.now - 1},
        {"grantee": "institution:hc"},
        {"grantee": "institution:nowhere"},
        {"grantee": "ab" * 32},
        {"records": []},
    ):
        args = {
            "grantee": doctor("hosp1").identity,
            "records": "*",
            "purpose": "treatment",
            "expires_at": exp,
            **bad,
        }
        rec.error(patient("hosp3"), "consent", "grant", **args)
    for who in (admin("hosp3"), REGULATOR, LEADER):
        rec.denied(
            who,
            "consent",
            "grant",
            grantee=doctor("hosp1").identity,
            records="*",
            purpose="treatment",
            expires_at=exp,
        )


def test_consent_queries(rec: Chain) -> None:
    other = doctor("hosp1")
    rec.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee=other.identity,
        records="*",
        purpose="treatment",
        expires_at=rec.now + DAY,
        grant_id="g-q",
    )
    rec.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee="institution:hosp1",
        records="*",
        purpose="referral",
        expires_at=rec.now + DAY,
        grant_id="g-q2",
    )
    assert rec.query(other, "consent", "get", grant_id="g-q")["grantee"] == other.identity
    assert rec.query(REGULATOR, "consent", "get", grant_id="g-q")["status"] == "active"
    rec.denied(doctor("hosp2"), "consent", "get", grant_id="g-q")
    assert rec.query(patient("hosp3"), "consent", "list_for_patient", patient=P3) == ["g-q", "g-q2"]
    rec.denied(patient("hosp3", 2), "consent", "list_for_patient", patient=P3)
    assert rec.query(other, "consent", "list_for_grantee") == ["g-q", "g-q2"]


def test_grants_of_a_record(rec: Chain) -> None:
    put_record(rec, doctor("hosp3"), "rec-2", P3)
    rec.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee="institution:hosp1",
        records="*",
        purpose="referral",
        expires_at=rec.now + DAY,
        grant_id="g-all",
    )
    rec.ok(
        doctor("hosp3"),
        "consent",
        "grant",
        grantee=doctor("hosp2").identity,
        records=["rec-1"],
        purpose="treatment",
        expires_at=rec.now + 5000,
        grant_id="g-one",
    )
    rec.ok(patient("hosp3"), "consent", "revoke", grant_id="g-all")
    rec.now += 10_000
    grants = rec.query(REGULATOR, "records", "grants", record_id="rec-1")
    assert [(g["id"], g["status"], g["purpose"]) for g in grants] == [
        ("g-one", "expired", "treatment"),
        ("g-all", "revoked", "referral"),
    ]
    assert grants[0]["granted_by"] == doctor("hosp3").identity
    assert [
        g["id"] for g in rec.query(patient("hosp3"), "records", "grants", record_id="rec-2")
    ] == ["g-all"]
    rec.denied(doctor("hosp2"), "records", "grants", record_id="rec-1")


def test_erase_by_owner(rec: Chain) -> None:
    rec.denied(doctor("hosp3", 2), "records", "erase", record_id="rec-1")
    rec.denied(patient("hosp3"), "records", "erase", record_id="rec-1")
    rec.denied(admin("hosp3"), "records", "erase", record_id="rec-1")  # no patient request
    rec.ok(doctor("hosp3"), "records", "erase", record_id="rec-1")
    assert rec.events_named("erase") == [
        {
            "record": "rec-1",
            "content_hash": rec.value("records", "record/rec-1")["content_hash"],
            "vault_node": "hosp3",
            "institution": "hosp3",
            "patient": P3,
        }
    ]
    rec.error(doctor("hosp3"), "records", "access", record_id="rec-1")
    rec.error(doctor("hosp3"), "records", "erase", record_id="rec-1")
    assert rec.value("records", "record/rec-1")["status"] == "erased"


def test_erase_on_patient_request_confirmed_by_institution(rec: Chain) -> None:
    rec.denied(patient("hosp3", 2), "records", "request_erasure", record_id="rec-1")
    rec.denied(doctor("hosp3"), "records", "request_erasure", record_id="rec-1")
    rec.ok(patient("hosp3"), "records", "request_erasure", record_id="rec-1")
    rec.denied(admin("hosp1"), "records", "erase", record_id="rec-1")
    rec.ok(admin("hosp3"), "records", "erase", record_id="rec-1")
    assert rec.value("records", "record/rec-1")["status"] == "erased"


def test_metadata_queries(rec: Chain) -> None:
    put_record(rec, doctor("hosp1"), "rec-h1", P3)
    assert rec.query(REGULATOR, "records", "get", record_id="rec-1")["owner_institution"] == "hosp3"
    assert rec.query(patient("hosp3"), "records", "get", record_id="rec-1")["id"] == "rec-1"
    assert rec.query(doctor("hosp3", 2), "records", "get", record_id="rec-1")["id"] == "rec-1"
    rec.denied(doctor("hosp2"), "records", "get", record_id="rec-1")
    rec.denied(patient("hosp3", 2), "records", "get", record_id="rec-1")
    assert rec.query(patient("hosp3"), "records", "list_by_patient", patient=P3) == [
        "rec-1",
        "rec-h1",
    ]
    assert rec.query(REGULATOR, "records", "list_by_patient", patient=P3) == ["rec-1", "rec-h1"]
    assert rec.query(doctor("hosp1", 2), "records", "list_by_patient", patient=P3) == ["rec-h1"]
    rec.denied(patient("hosp3", 2), "records", "list_by_patient", patient=P3)

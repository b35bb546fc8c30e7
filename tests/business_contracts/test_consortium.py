"""consortium: institutions, departments, doctors, patients, revocation, the key registry."""

from __future__ import annotations

from node.codes import TxCode
from tests.business_contracts.world import (
    LEADER,
    REGULATOR,
    Chain,
    admin,
    caller,
    doctor,
    identity_of,
    patient,
    pseudonym,
    put_record,
)

KEY_ARGS = {"public_key": "bXkta2V5LXYx", "suite": "MLKEM768-X25519", "signature": "c2lnLXYx"}


def test_leader_admits_and_suspends_institutions(chain: Chain) -> None:
    args = {"institution": "hosp9", "name": "Hosp 9", "tier": "primary", "region": "r9"}
    for who in (admin("hosp1"), doctor("hosp1"), patient("hosp1"), REGULATOR):
        chain.denied(who, "consortium", "admit_institution", **args)
    # A certificate claiming OU=leader but not the genesis leader identity.
    chain.denied(caller("fake", "leader", "hc"), "consortium", "admit_institution", **args)
    assert chain.ok(LEADER, "consortium", "admit_institution", **args)["status"] == "active"
    assert chain.value("consortium", "institution/hosp9")["tier"] == "primary"
    assert chain.events_named("institution_admitted") == [
        {"institution": "hosp9", "tier": "primary", "region": "r9"}
    ]
    chain.error(LEADER, "consortium", "admit_institution", **args)  # already active
    chain.error(
        LEADER,
        "consortium",
        "admit_institution",
        **{**args, "institution": "x", "tier": "quaternary"},
    )
    chain.denied(admin("hosp1"), "consortium", "suspend_institution", institution="hosp2")
    chain.ok(LEADER, "consortium", "suspend_institution", institution="hosp2", reason="audit")
    assert chain.value("consortium", "institution/hosp2")["status"] == "suspended"
    chain.error(LEADER, "consortium", "suspend_institution", institution="hosp2")
    chain.ok(LEADER, "consortium", "reinstate_institution", institution="hosp2")
    assert chain.value("consortium", "institution/hosp2")["status"] == "active"


def test_admin_registers_only_in_its_own_institution(chain: Chain) -> None:
    new = caller("hosp2-doctor9", "doctor", "hosp2")
    # hosp1's admin cannot bind a doctor to hosp2: it only ever writes its own institution.
    chain.ok(
        admin("hosp1"),
        "consortium",
        "register_doctor",
        identity=new.identity,
        name="x",
        department="d01",
    )
    assert chain.value("consortium", f"identity/{new.identity}")["institution"] == "hosp1"
    # ... so hosp2's admin cannot take it over, and the hosp2 certificate does not match.
    chain.denied(
        admin("hosp2"),
        "consortium",
        "register_doctor",
        identity=new.identity,
        name="x",
        department="d01",
    )
    chain.denied(
        new,
        "records",
        "put",
        record_id="r",
        patient=pseudonym("hosp2"),
        content_hash="0" * 64,
        size=1,
        media_type="application/pdf",
        vault_node="hosp2",
    )
    for who in (doctor("hosp1"), patient("hosp1"), LEADER, REGULATOR):
        chain.denied(who, "consortium", "register_department", department="d09", name="x")
        chain.denied(
            who,
            "consortium",
            "register_patient",
            identity=identity_of("p"),
            pseudonym="PSN-abcdefgh",
        )
    chain.error(
        admin("hosp1"),
        "consortium",
        "register_doctor",
        identity=identity_of("z"),
        name="z",
        department="nope",
    )
    chain.error(
        admin("hosp1"),
        "consortium",
        "register_doctor",
        identity="not-hex",
        name="z",
        department="d01",
    )


def test_doctor_can_move_department(chain: Chain) -> None:
    d = doctor("hosp1", 2)
    chain.ok(
        admin("hosp1"),
        "consortium",
        "register_doctor",
        identity=d.identity,
        name="x",
        department="d02",
    )
    assert chain.query(
        d, "consortium", "list_doctors", institution="hosp1", department="d02"
    ) == sorted([d.identity, doctor("hosp1", 3).identity])
    assert d.identity not in chain.query(
        d, "consortium", "list_doctors", institution="hosp1", department="d01"
    )


def test_patients_are_pseudonyms_only(chain: Chain) -> None:
    new = identity_of("hosp1-patient9")
    for bad in (
        "110101199003074578",
        "11010119900307457X",
        "short",
        "Zhang San",
        "张三先生的病历号",
    ):
        chain.error(admin("hosp1"), "consortium", "register_patient", identity=new, pseudonym=bad)
    chain.error(
        admin("hosp1"), "consortium", "register_patient", identity=new, pseudonym=pseudonym("hosp2")
    )
    chain.ok(
        admin("hosp1"), "consortium", "register_patient", identity=new, pseudonym="PSN-7f3a9c21"
    )
    assert chain.value("consortium", "patient/PSN-7f3a9c21")["identity"] == new
    chain.error(
        admin("hosp1"), "consortium", "register_patient", identity=new, pseudonym="PSN-other-01"
    )


def test_revocation_writes_the_key_the_node_reads(chain: Chain) -> None:
    target = doctor("hosp3")
    chain.denied(admin("hosp2"), "consortium", "revoke", identity=target.identity)
    chain.denied(doctor("hosp3", 2), "consortium", "revoke", identity=target.identity)
    chain.denied(REGULATOR, "consortium", "revoke", identity=target.identity)
    chain.ok(admin("hosp3"), "consortium", "revoke", identity=target.identity, reason="lost key")
    assert f"consortium/revoked/{target.identity}".encode() in chain.state.data
    assert chain.value("consortium", f"identity/{target.identity}")["status"] == "revoked"
    assert target.identity not in chain.query(
        doctor("hosp3", 2), "consortium", "list_doctors", institution="hosp3", department="d01"
    )
    chain.error(LEADER, "consortium", "revoke", identity=target.identity)  # already revoked
    # A revoked identity can do nothing in any contract (the node also refuses it).
    chain.denied(target, "consortium", "register_key", **KEY_ARGS)
    chain.denied(
        target,
        "records",
        "put",
        record_id="r1",
        patient=pseudonym("hosp3"),
        content_hash="a" * 64,
        size=1,
        media_type="application/pdf",
        vault_node="hosp3",
    )
    # The leader may revoke any member, but never the leader or regulator identity.
    chain.ok(LEADER, "consortium", "revoke", identity=patient("hosp2").identity)
    chain.denied(LEADER, "consortium", "revoke", identity=REGULATOR.identity)
    chain.denied(admin("hosp1"), "consortium", "revoke", identity=LEADER.identity)


def test_suspended_institution_members_can_do_nothing(chain: Chain) -> None:
    put_record(chain, doctor("hosp2"), "rec-s", pseudonym("hosp2"))
    chain.ok(LEADER, "consortium", "suspend_institution", institution="hosp2")
    chain.denied(admin("hosp2"), "consortium", "register_department", department="d09", name="x")
    chain.denied(doctor("hosp2"), "consortium", "register_key", **KEY_ARGS)
    chain.denied(doctor("hosp2"), "records", "access", record_id="rec-s")
    chain.denied(patient("hosp2"), "records", "access", record_id="rec-s")
    chain.denied(
        patient("hosp2"),
        "consent",
        "grant",
        grantee="institution:hosp1",
        records="*",
        purpose="referral",
        expires_at=chain.now + 10**6,
    )
    chain.denied(
        doctor("hosp2"),
        "referral",
        "create",
        patient=pseudonym("hosp2"),
        kind="upward",
        target_institution="hosp1",
        target_department="d01",
        department_enc="x",
        reason_enc="y",
        break_glass=True,
    )


def test_key_registry_register_rotate_history(chain: Chain) -> None:
    d = doctor("hosp1")
    chain.error(d, "consortium", "rotate_key", **KEY_ARGS)  # nothing to rotate yet
    chain.error(d, "consortium", "register_key", **{**KEY_ARGS, "suite": "RSA"})
    first = chain.ok(d, "consortium", "register_key", **KEY_ARGS)
    assert first["version"] == 1 and first["identity"] == d.identity
    assert first["signature"] == KEY_ARGS["signature"]  # stored for clients to verify
    chain.error(d, "consortium", "register_key", **KEY_ARGS)
    chain.error(d, "consortium", "rotate_key", **KEY_ARGS)  # same key again
    second = chain.ok(
        d, "consortium", "rotate_key", public_key="bmV3LWtleQ==", suite="X25519", signature="c2ln"
    )
    assert second["version"] == 2
    assert (
        chain.query(REGULATOR, "consortium", "get_key", identity=d.identity)["public_key"]
        == "bmV3LWtleQ=="
    )
    history = chain.query(d, "consortium", "key_history", identity=d.identity)
    assert [k["version"] for k in history] == [1, 2]
    assert (
        chain.query(d, "consortium", "get_key", identity=d.identity, version=1)["public_key"]
        == "bXkta2V5LXYx"
    )
    # Leader, regulator and admins register keys too; unregistered identities cannot.
    for who in (LEADER, REGULATOR, admin("hosp2"), patient("hosp3")):
        chain.ok(who, "consortium", "register_key", **KEY_ARGS)
    chain.denied(
        caller("hosp1-doctor99", "doctor", "hosp1"), "consortium", "register_key", **KEY_ARGS
    )


def test_rotated_key_keeps_record_ownership(chain: Chain) -> None:
    d = doctor("hosp1")
    chain.ok(d, "consortium", "register_key", **KEY_ARGS)
    put_record(chain, d, "rec-own", pseudonym("hosp1"))
    chain.ok(
        d, "consortium", "rotate_key", public_key="cm90YXRlZA==", suite="X25519", signature="cw=="
    )
    assert chain.ok(d, "records", "access", record_id="rec-own")["basis"] == "owner"
    chain.ok(
        d,
        "consent",
        "grant",
        grantee=doctor("hosp2").identity,
        records=["rec-own"],
        purpose="treatment",
        expires_at=chain.now + 10**6,
    )
    chain.ok(d, "records", "erase", record_id="rec-own")


def test_queries(chain: Chain) -> None:
    d = doctor("hosp1")
    assert chain.query(d, "consortium", "get_institution", institution="hosp3")["tier"] == "primary"
    assert (
        chain.query(d, "consortium", "get_department", institution="hosp1", department="d02")[
            "accepts_referrals"
        ]
        is False
    )
    assert [
        x["id"] for x in chain.query(d, "consortium", "list_departments", institution="hosp1")
    ] == ["d01", "d02"]
    info = chain.query(d, "consortium", "get_identity", identity=patient("hosp3").identity)
    assert info["registration"]["pseudonym"] == pseudonym("hosp3") and info["revoked"] is False
    assert chain.query(d, "consortium", "is_revoked", identity=d.identity) is False
    # Queries run read-only: a write in a query is refused by the engine.
    outcome = chain.call(
        LEADER, "consortium", "suspend_institution", read_only=True, institution="hosp2"
    )
    assert outcome.code == TxCode.PERMISSION_DENIED

"""referral: every transition of the state machine, allowed and denied; tier rules,
consent and break-glass, deadlines (on touch and by sweep), MDT, follow-ups."""

from __future__ import annotations

import json
from typing import Any

import pytest

from node.codes import TxCode
from tests.business_contracts.world import (
    LEADER,
    REGULATOR,
    Chain,
    admin,
    caller,
    doctor,
    patient,
    pseudonym,
    put_record,
)

P3 = pseudonym("hosp3")
DAY = 86_400_000
REQUESTER = doctor("hosp3")  # a county (primary) hospital doctor
TARGET = doctor("hosp1")  # provincial (tertiary) hospital, department d01
TARGET2 = doctor("hosp1", 2)  # same department
OTHER_DEPT = doctor("hosp1", 3)  # hosp1, department d02


@pytest.fixture
def world(chain: Chain) -> Chain:
    """rec-1 of hosp3-patient1, and the patient's consent 'c-1' to refer it to hosp1."""
    put_record(chain, REQUESTER, "rec-1", P3)
    chain.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee="institution:hosp1",
        records=["rec-1"],
        purpose="referral",
        expires_at=chain.now + 30 * DAY,
        grant_id="c-1",
    )
    chain.events.clear()
    return chain


def upward(**change: Any) -> dict[str, Any]:
    args = {
        "patient": P3,
        "kind": "upward",
        "target_institution": "hosp1",
        "target_department": "d01",
        "department_enc": "ENC(dept)",
        "reason_enc": "ENC(reason)",
        "records": ["rec-1"],
        "consent": "c-1",
        "referral_id": "ref-1",
    }
    args.update(change)
    return args


def create(chain: Chain, who=REQUESTER, **change: Any) -> dict[str, Any]:
    return chain.ok(who, "referral", "create", **upward(**change))


def status(chain: Chain, rid: str = "ref-1") -> str:
    return chain.value("referral", f"referral/{rid}")["status"]


def status_record(chain: Chain, rid: str = "ref-1") -> dict[str, Any]:
    return chain.value("referral", f"referral/{rid}")


def test_full_upward_path(world: Chain) -> None:
    ref = create(world)
    assert (
        ref["status"] == "requested"
        and ref["from_tier"] == "primary"
        and ref["to_tier"] == "tertiary"
    )
    # Sealed fields are stored opaque beside the record, each once (transitions rewrite
    # the record, not the ciphertext); `get` puts them back for the parties.
    assert "department_enc" not in ref and "reason_enc" not in status_record(world)
    assert world.value("referral", "sealed/ref-1/department_enc") == "ENC(dept)"
    assert world.query(TARGET, "referral", "get", referral_id="ref-1")["reason_enc"] == (
        "ENC(reason)"
    )
    assert world.query(TARGET2, "referral", "inbox", department="d01")[0]["id"] == "ref-1"
    world.ok(TARGET2, "referral", "receive", referral_id="ref-1")
    assert status(world) == "received"
    world.ok(TARGET, "referral", "accept", referral_id="ref-1")
    assert status(world) == "accepted"
    assert not [k for k in world.state.data if k.startswith(b"referral/due/")]
    world.ok(TARGET, "referral", "start", referral_id="ref-1")
    assert status(world) == "in-progress"
    world.ok(TARGET, "referral", "complete", referral_id="ref-1", outcome_enc="ENC(out)")
    assert status(world) == "completed"
    names = [n for c, n, _d in world.events if c == "referral"]
    assert names == [
        "referral_create",
        "referral_receive",
        "referral_accept",
        "referral_start",
        "referral_complete",
    ]
    created = world.events_named("referral_create")[0]
    assert "reason_enc" not in created and created["target_department"] == "d01"


def test_who_may_receive_accept_reject(world: Chain) -> None:
    create(world)
    for who in (patient("hosp1"), patient("hosp3"), admin("hosp1"), REGULATOR, LEADER):
        world.denied(who, "referral", "receive", referral_id="ref-1")
    for who in (OTHER_DEPT, doctor("hosp2"), REQUESTER):
        world.denied(who, "referral", "receive", referral_id="ref-1")
    world.ok(TARGET, "referral", "receive", referral_id="ref-1")
    for who in (
        patient("hosp3"),
        patient("hosp1"),
        OTHER_DEPT,
        doctor("hosp2"),
        REQUESTER,
        REGULATOR,
    ):
        world.denied(who, "referral", "accept", referral_id="ref-1")
        world.denied(who, "referral", "reject", referral_id="ref-1")
    world.ok(TARGET, "referral", "accept", referral_id="ref-1")
    # start / complete: only the accepting doctor, even within the target department.
    world.denied(TARGET2, "referral", "start", referral_id="ref-1")
    world.denied(REQUESTER, "referral", "start", referral_id="ref-1")
    world.ok(TARGET, "referral", "start", referral_id="ref-1")
    world.denied(TARGET2, "referral", "complete", referral_id="ref-1")
    world.denied(patient("hosp3"), "referral", "complete", referral_id="ref-1")
    world.ok(TARGET, "referral", "complete", referral_id="ref-1")


def test_out_of_order_transitions_are_refused(world: Chain) -> None:
    create(world)
    world.error(TARGET, "referral", "accept", referral_id="ref-1")  # not yet received
    world.error(TARGET, "referral", "reject", referral_id="ref-1")
    world.ok(TARGET, "referral", "receive", referral_id="ref-1")
    world.error(TARGET, "referral", "receive", referral_id="ref-1")
    world.ok(TARGET, "referral", "accept", referral_id="ref-1")
    world.error(TARGET, "referral", "accept", referral_id="ref-1")
    world.error(TARGET, "referral", "reject", referral_id="ref-1")
    world.error(TARGET, "referral", "complete", referral_id="ref-1")  # not started
    world.ok(TARGET, "referral", "start", referral_id="ref-1")
    world.error(REQUESTER, "referral", "cancel", referral_id="ref-1")  # care has started
    world.error(TARGET, "referral", "start", referral_id="ref-1")
    world.ok(TARGET, "referral", "complete", referral_id="ref-1")
    for action in ("receive", "accept", "reject", "start", "complete"):
        world.error(TARGET, "referral", action, referral_id="ref-1")  # completed is final
    world.error(REQUESTER, "referral", "cancel", referral_id="ref-1")
    world.error(TARGET, "referral", "accept", referral_id="ref-nope")


def test_reject_and_cancel(world: Chain) -> None:
    create(world)
    world.ok(TARGET, "referral", "receive", referral_id="ref-1")
    world.ok(TARGET2, "referral", "reject", referral_id="ref-1", rejection_enc="ENC(no beds)")
    assert status(world) == "rejected"
    world.error(REQUESTER, "referral", "cancel", referral_id="ref-1")
    for step in ((), ("receive",), ("receive", "accept")):
        rid = "ref-c" + str(len(step))
        create(world, referral_id=rid)
        for action in step:
            world.ok(TARGET, "referral", action, referral_id=rid)
        world.denied(doctor("hosp3", 2), "referral", "cancel", referral_id=rid)
        world.denied(TARGET, "referral", "cancel", referral_id=rid)
        world.denied(patient("hosp3"), "referral", "cancel", referral_id=rid)
        world.ok(REQUESTER, "referral", "cancel", referral_id=rid)
        assert status(world, rid) == "cancelled"


@pytest.mark.parametrize(
    ("who", "kind", "target", "allowed"),
    [
        (REQUESTER, "upward", "hosp2", True),  # primary -> secondary
        (REQUESTER, "upward", "hosp4", False),  # primary -> primary
        (doctor("hosp1"), "upward", "hosp3", False),  # an upward referral to a lower tier
        (doctor("hosp2"), "upward", "hosp3", False),
        (doctor("hosp1"), "downward", "hosp3", True),
        (doctor("hosp2"), "downward", "hosp1", False),  # downward to a higher tier
        (REQUESTER, "downward", "hosp4", False),
        (REQUESTER, "horizontal", "hosp4", True),
        (REQUESTER, "horizontal", "hosp2", False),
        (REQUESTER, "consultation", "hosp1", True),
        (doctor("hosp1"), "consultation", "hosp3", True),
        (REQUESTER, "upward", "hc", False),  # the authority takes no referrals
    ],
)
def test_tier_rules(chain: Chain, who, kind, target, allowed) -> None:
    put_record(chain, who, "rec-t", P3)
    args = upward(
        kind=kind, target_institution=target, records=["rec-t"], consent="", break_glass=True
    )
    if allowed:
        assert chain.ok(who, "referral", "create", **args)["status"] == "requested"
    else:
        chain.error(who, "referral", "create", **args)


def test_target_department_rules(world: Chain) -> None:
    world.error(REQUESTER, "referral", "create", **upward(target_department="d02"))  # closed
    world.error(REQUESTER, "referral", "create", **upward(target_department="d99"))
    world.error(REQUESTER, "referral", "create", **upward(target_institution="hosp9"))
    world.error(REQUESTER, "referral", "create", **upward(kind="teleport"))
    world.error(REQUESTER, "referral", "create", **upward(department_enc=""))
    world.error(REQUESTER, "referral", "create", **upward(respond_within_ms=10))
    world.error(
        REQUESTER, "referral", "create", **upward(mdt_members=[TARGET.identity], mdt_required=1)
    )
    # Same institution: only consultation and MDT stay inside it, never the same department.
    put_record(world, doctor("hosp1"), "rec-in", P3)
    args = upward(records=["rec-in"], consent="", break_glass=True, target_department="d01")
    world.error(OTHER_DEPT, "referral", "create", **{**args, "kind": "upward"})
    world.error(TARGET2, "referral", "create", **{**args, "kind": "consultation"})
    world.ok(OTHER_DEPT, "referral", "create", **{**args, "kind": "consultation"})
    for who in (patient("hosp3"), admin("hosp3"), REGULATOR, LEADER):
        world.denied(who, "referral", "create", **upward())


def test_consent_is_required_unless_break_glass(world: Chain) -> None:
    assert "consent" in world.denied(REQUESTER, "referral", "create", **upward(consent=""))
    world.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee="institution:hosp2",
        records="*",
        purpose="referral",
        expires_at=world.now + DAY,
        grant_id="c-h2",
    )
    world.denied(REQUESTER, "referral", "create", **upward(consent="c-h2"))  # names hosp2
    world.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee="institution:hosp1",
        records="*",
        purpose="research",
        expires_at=world.now + DAY,
        grant_id="c-res",
    )
    world.denied(REQUESTER, "referral", "create", **upward(consent="c-res"))  # wrong purpose
    put_record(world, REQUESTER, "rec-2", P3)
    world.denied(
        REQUESTER, "referral", "create", **upward(records=["rec-1", "rec-2"])
    )  # not covered
    world.denied(REQUESTER, "referral", "create", **upward(consent="c-nope"))
    # Another patient's records, whatever the consent.
    put_record(world, REQUESTER, "rec-p2", pseudonym("hosp3", 2))
    world.error(REQUESTER, "referral", "create", **upward(records=["rec-p2"]))
    # A revoked consent stops the next referral.
    world.ok(REQUESTER, "referral", "create", **upward(referral_id="ref-ok"))
    world.ok(patient("hosp3"), "consent", "revoke", grant_id="c-1")
    world.denied(REQUESTER, "referral", "create", **upward(referral_id="ref-2"))
    assert not world.events_named("break_glass")


def test_expired_consent_is_refused(world: Chain) -> None:
    world.now += 31 * DAY
    assert "expired" in world.denied(REQUESTER, "referral", "create", **upward())


def test_break_glass_is_flagged_for_the_regulator(world: Chain) -> None:
    ref = create(world, consent="", break_glass=True)
    assert ref["break_glass"] is True and ref["consent"] == ""
    flag = world.events_named("break_glass")
    assert flag == [
        {
            "referral": "ref-1",
            "patient": P3,
            "requester": REQUESTER.identity,
            "institution": "hosp3",
            "target_institution": "hosp1",
        }
    ]
    flags = world.query(REGULATOR, "audit", "flags")
    assert flags["total"] == 1 and flags["events"][0]["detail"]["referral"] == "ref-1"
    assert world.query(REGULATOR, "audit", "stats")["referrals"]["break_glass"] == 1


def test_deadline_fails_on_read_and_on_touch(world: Chain) -> None:
    deadline = create(world, respond_within_ms=5000)["deadline"]
    world.now = deadline  # exactly at the deadline: still open
    assert world.query(TARGET, "referral", "get", referral_id="ref-1")["status"] == "requested"
    world.now += 1
    assert world.query(TARGET, "referral", "get", referral_id="ref-1")["status"] == "failed"
    assert status(world) == "requested"  # a read writes nothing
    result = world.ok(TARGET, "referral", "receive", referral_id="ref-1")
    assert result == {
        "id": "ref-1",
        "status": "failed",
        "applied": False,
        "reason": "deadline passed",
    }
    assert status(world) == "failed"
    assert world.events_named("referral_fail")[0]["id"] == "ref-1"
    world.error(TARGET, "referral", "receive", referral_id="ref-1")
    world.error(REQUESTER, "referral", "cancel", referral_id="ref-1")
    # A doctor who may not act on it cannot fail it either.
    create(world, referral_id="ref-2", respond_within_ms=1000)
    world.now += 2000
    world.denied(OTHER_DEPT, "referral", "accept", referral_id="ref-2")
    assert status(world, "ref-2") == "requested"


def test_received_but_unanswered_fails_too(world: Chain) -> None:
    create(world, respond_within_ms=5000)
    world.ok(TARGET, "referral", "receive", referral_id="ref-1")
    world.now += 10_000
    assert world.ok(TARGET, "referral", "accept", referral_id="ref-1")["applied"] is False
    assert status(world) == "failed"


def test_sweep_fails_overdue_referrals_in_deadline_order(world: Chain) -> None:
    t = world.now
    create(world, referral_id="ref-late", respond_within_ms=20_000)  # deadline t + 20 s
    create(world, referral_id="ref-a", respond_within_ms=3000)  # t + 1 s + 3 s
    create(world, referral_id="ref-b", respond_within_ms=4000)  # t + 2 s + 4 s
    create(world, referral_id="ref-answered", respond_within_ms=3000)
    world.ok(TARGET, "referral", "receive", referral_id="ref-answered")
    world.ok(TARGET, "referral", "accept", referral_id="ref-answered")
    world.now = t + 10_000
    node = doctor("hosp1", 2)  # any caller; the node calls it at the end of every block
    assert world.ok(node, "referral", "sweep", limit=1) == {"failed": ["ref-a"]}
    assert world.ok(node, "referral", "sweep") == {"failed": ["ref-b"]}
    assert world.ok(node, "referral", "sweep") == {"failed": []}
    assert [status(world, r) for r in ("ref-a", "ref-b", "ref-late", "ref-answered")] == [
        "failed",
        "failed",
        "requested",
        "accepted",
    ]
    world.now = t + 30_000
    assert world.ok(node, "referral", "sweep") == {"failed": ["ref-late"]}
    assert world.query(REGULATOR, "audit", "stats")["referrals"]["by_status"] == {
        "accepted": 1,
        "failed": 3,
    }
    world.error(node, "referral", "sweep", limit=0)


def test_transitions_do_not_copy_the_sealed_fields(world: Chain) -> None:
    """The reason's ciphertext is written once, at create; receive and accept rewrite
    the record, which holds none of it."""
    create(world, reason_enc="ENC(" + "r" * 4000 + ")")
    for action in ("receive", "accept"):
        out = world.call(TARGET, "referral", action, referral_id="ref-1")
        assert out.code == TxCode.VALID
        assert not [k for k in out.writes if k.startswith(b"referral/sealed/")]
        assert all(b"rrrr" not in (v or b"") for v in out.writes.values())
    ref = world.query(TARGET, "referral", "get", referral_id="ref-1")
    assert ref["status"] == "accepted" and ref["reason_enc"].startswith("ENC(rrrr")


def test_the_regulator_never_sees_sealed_fields_of_an_older_record(world: Chain) -> None:
    """A record written by an earlier version of the contract (before an upgrade) held
    its sealed fields inside: the regulator's `get` still removes them."""
    create(world)
    legacy = status_record(world)
    legacy["reason_enc"] = "ENC(old reason)"
    legacy["signatures"] = {MDT[0].identity: {"at": 1, "opinion_enc": "ENC(old op)"}}
    world.state.data[b"referral/referral/ref-1"] = json.dumps(legacy).encode()
    seen = world.query(REGULATOR, "referral", "get", referral_id="ref-1")
    assert "reason_enc" not in seen and "department_enc" not in seen
    assert seen["signatures"] == {MDT[0].identity: {"at": 1}}
    party = world.query(TARGET, "referral", "get", referral_id="ref-1")
    assert party["reason_enc"] == "ENC(reason)"  # the sealed key wins over the old copy


def test_sweep_reads_only_the_earliest_deadlines(world: Chain) -> None:
    """The deadline index holds every open referral; the sweep, run after every block,
    takes its first `limit` keys only, however many are open (that the host then reads
    only those is tests/sandbox/test_sandbox_range.py)."""
    for i in range(40):
        create(world, referral_id=f"ref-{i}", respond_within_ms=86_400_000)
    out = world.call(doctor("hosp1", 2), "referral", "sweep", limit=3)
    assert out.code == TxCode.VALID and json.loads(out.result) == {"failed": []}
    assert len([k for k in out.reads if k.startswith(b"referral/due/")]) == 3


def test_sweep_writes_the_same_bytes_whoever_calls_it(world: Chain) -> None:
    """Every node runs the end-of-block sweep with its own node identity: the failure it
    writes must not depend on that identity, or nodes would diverge."""
    create(world, respond_within_ms=1000)
    world.now += 5000
    one, two = world.copy(), world.copy()
    a = one.call(caller("hosp1", "node", "hosp1"), "referral", "sweep")
    b = two.call(caller("hosp2", "node", "hosp2"), "referral", "sweep")
    assert a.code == b.code == TxCode.VALID
    assert a.writes == b.writes and a.events == b.events and a.gas_used == b.gas_used
    entry = one.value("referral", "hist/referral/ref-1/00000001")
    assert entry["action"] == "fail" and entry["actor_role"] == "clock" and entry["actor"] == ""


MDT = [doctor("hosp1", 2), doctor("hosp2"), doctor("hosp4")]


def test_mdt_completes_only_with_n_of_m_signatures(world: Chain) -> None:
    world.error(
        REQUESTER,
        "referral",
        "create",
        **upward(kind="mdt", mdt_members=[MDT[0].identity], mdt_required=1),
    )
    world.error(
        REQUESTER,
        "referral",
        "create",
        **upward(kind="mdt", mdt_required=4, mdt_members=[m.identity for m in MDT]),
    )
    world.error(
        REQUESTER,
        "referral",
        "create",
        **upward(
            kind="mdt", mdt_required=1, mdt_members=[MDT[0].identity, patient("hosp1").identity]
        ),
    )
    create(world, kind="mdt", mdt_members=[m.identity for m in MDT], mdt_required=2)
    world.ok(TARGET, "referral", "receive", referral_id="ref-1")
    world.ok(TARGET, "referral", "accept", referral_id="ref-1")
    world.error(MDT[1], "referral", "sign", referral_id="ref-1")  # not in progress yet
    world.ok(TARGET, "referral", "start", referral_id="ref-1")
    assert "0" in world.error(TARGET, "referral", "complete", referral_id="ref-1")
    world.denied(doctor("hosp2", 2), "referral", "sign", referral_id="ref-1")  # not a member
    world.denied(TARGET, "referral", "sign", referral_id="ref-1")
    world.denied(patient("hosp3"), "referral", "sign", referral_id="ref-1")
    world.ok(MDT[1], "referral", "sign", referral_id="ref-1", opinion_enc="ENC(op1)")
    world.error(MDT[1], "referral", "sign", referral_id="ref-1")  # once per member
    world.error(TARGET, "referral", "complete", referral_id="ref-1")  # 1 of 2
    world.ok(MDT[2], "referral", "sign", referral_id="ref-1")
    world.ok(TARGET, "referral", "complete", referral_id="ref-1")
    assert status(world) == "completed"
    world.error(MDT[0], "referral", "sign", referral_id="ref-1")  # too late
    # Opinions are sealed beside the record; parties get them back, the regulator not.
    signed = world.query(TARGET, "referral", "get", referral_id="ref-1")["signatures"]
    assert signed[MDT[1].identity]["opinion_enc"] == "ENC(op1)"
    seen = world.query(REGULATOR, "referral", "get", referral_id="ref-1")["signatures"]
    assert "opinion_enc" not in seen[MDT[1].identity] and "at" in seen[MDT[1].identity]
    # MDT members read the referred record through the referral; others do not.
    assert (
        world.ok(MDT[2], "records", "access", record_id="rec-1", referral="ref-1")["basis"]
        == "referral:ref-1"
    )
    world.denied(doctor("hosp4", 2), "records", "access", record_id="rec-1", referral="ref-1")


def test_target_department_reads_referred_records(world: Chain) -> None:
    create(world)
    assert (
        world.ok(TARGET2, "records", "access", record_id="rec-1", referral="ref-1")["basis"]
        == "referral:ref-1"
    )
    world.denied(OTHER_DEPT, "records", "access", record_id="rec-1", referral="ref-1")
    world.denied(doctor("hosp2"), "records", "access", record_id="rec-1", referral="ref-1")
    world.denied(patient("hosp1"), "records", "access", record_id="rec-1", referral="ref-1")
    put_record(world, REQUESTER, "rec-x", P3)
    world.denied(TARGET, "records", "access", record_id="rec-x", referral="ref-1")  # not listed
    world.ok(TARGET, "referral", "receive", referral_id="ref-1")
    world.ok(TARGET, "referral", "reject", referral_id="ref-1")
    world.denied(TARGET2, "records", "access", record_id="rec-1", referral="ref-1")
    create(world, referral_id="ref-f", respond_within_ms=1000)
    world.now += 5000
    world.denied(TARGET2, "records", "access", record_id="rec-1", referral="ref-f")  # failed


def test_followups_after_a_downward_referral(chain: Chain) -> None:
    senior = doctor("hosp1")
    put_record(chain, senior, "rec-d", P3)
    args = upward(
        kind="downward",
        target_institution="hosp3",
        records=["rec-d"],
        consent="",
        break_glass=True,
        referral_id="ref-d",
    )
    chain.ok(senior, "referral", "create", **args)
    county = doctor("hosp3")
    chain.error(
        county, "referral", "followup_add", referral_id="ref-d", note_enc="ENC(n)"
    )  # requested
    chain.ok(county, "referral", "receive", referral_id="ref-d")
    chain.ok(county, "referral", "accept", referral_id="ref-d")
    put_record(chain, county, "rec-f1", P3)
    chain.ok(county, "referral", "followup_add", referral_id="ref-d", record_id="rec-f1")
    chain.ok(senior, "referral", "followup_add", referral_id="ref-d", note_enc="ENC(advice)")
    chain.denied(doctor("hosp2"), "referral", "followup_add", referral_id="ref-d", note_enc="x")
    chain.denied(patient("hosp3"), "referral", "followup_add", referral_id="ref-d", note_enc="x")
    chain.error(county, "referral", "followup_add", referral_id="ref-d")  # nothing to add
    put_record(chain, county, "rec-other", pseudonym("hosp3", 2))
    chain.error(county, "referral", "followup_add", referral_id="ref-d", record_id="rec-other")
    chain.ok(county, "referral", "start", referral_id="ref-d")
    chain.ok(county, "referral", "complete", referral_id="ref-d")
    chain.ok(county, "referral", "followup_add", referral_id="ref-d", note_enc="ENC(week 4)")
    items = chain.query(senior, "referral", "followups", referral_id="ref-d")
    assert [(i["n"], i["record"]) for i in items] == [(0, "rec-f1"), (1, ""), (2, "")]
    chain.denied(REGULATOR, "referral", "followups", referral_id="ref-d")
    # Only downward referrals carry follow-ups.
    put_record(chain, county, "rec-u", P3)
    chain.ok(
        county,
        "referral",
        "create",
        **upward(records=["rec-u"], consent="", break_glass=True, referral_id="ref-u"),
    )
    chain.ok(senior, "referral", "receive", referral_id="ref-u")
    chain.ok(senior, "referral", "accept", referral_id="ref-u")
    chain.error(senior, "referral", "followup_add", referral_id="ref-u", note_enc="x")


def test_get_visibility(world: Chain) -> None:
    create(world)
    for who in (REQUESTER, TARGET, TARGET2, patient("hosp3")):
        assert (
            world.query(who, "referral", "get", referral_id="ref-1")["reason_enc"] == "ENC(reason)"
        )
    seen = world.query(REGULATOR, "referral", "get", referral_id="ref-1")
    assert "reason_enc" not in seen and "department_enc" not in seen and seen["kind"] == "upward"
    for who in (OTHER_DEPT, doctor("hosp2"), patient("hosp3", 2)):
        world.denied(who, "referral", "get", referral_id="ref-1")
    world.denied(OTHER_DEPT, "referral", "inbox", department="d01")
    assert [
        i["id"] for i in world.query(admin("hosp1"), "referral", "inbox", department="d01")
    ] == ["ref-1"]


def test_transition_table_is_the_only_source_of_status_changes() -> None:
    import ast

    from tests.business_contracts.world import source

    tree = ast.parse(source("referral"))
    table = next(
        n.value
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "TRANSITIONS"
    )
    rows = ast.literal_eval(table)
    assert {(a, f, t) for a, f, t, _w in rows} >= {
        ("receive", "requested", "received"),
        ("accept", "received", "accepted"),
        ("reject", "received", "rejected"),
        ("start", "accepted", "in-progress"),
        ("complete", "in-progress", "completed"),
        ("cancel", "requested", "cancelled"),
        ("fail", "requested", "failed"),
        ("fail", "received", "failed"),
    }
    # Stored status is set in exactly two places: creation and `_move` (which applies a
    # row of the table); `get` only shows the effective status of what it read.
    text = source("referral")
    assert text.count('ref["status"] = to_status') == 1 and text.count('"status": "requested"') == 1
    assert text.count('["status"] = "') == 0


def test_the_authority_neither_refers_nor_receives(world: Chain) -> None:
    commission = doctor("hc")
    world.ok(admin("hc"), "consortium", "register_department", department="d01", name="d01")
    world.ok(
        admin("hc"),
        "consortium",
        "register_doctor",
        identity=commission.identity,
        name="x",
        department="d01",
    )
    put_record(world, commission, "rec-hc", P3)
    args = upward(records=["rec-hc"], consent="", break_glass=True)
    assert "does not refer" in world.error(commission, "referral", "create", **args)
    args = upward(target_institution="hc", consent="", break_glass=True)
    assert "does not take" in world.error(REQUESTER, "referral", "create", **args)

"""audit: the regulator's traces and statistics, checked against a scripted sequence."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

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
ENC = {"department_enc": "ENC(dept)", "reason_enc": "ENC(reason)"}


def refer(
    chain: Chain, who, rid: str, kind: str, target: str, records: list[str], **extra: Any
) -> int:
    at = chain.now
    chain.ok(
        who,
        "referral",
        "create",
        referral_id=rid,
        patient=P3,
        kind=kind,
        target_institution=target,
        target_department="d01",
        records=records,
        **ENC,
        **extra,
    )
    return at


def step(chain: Chain, who, action: str, rid: str, **extra: Any) -> int:
    at = chain.now
    chain.ok(who, "referral", action, referral_id=rid, **extra)
    return at


@pytest.fixture
def scripted(chain: Chain) -> tuple[Chain, dict[str, int]]:
    """Five referrals of hosp3-patient1, one of each kind, ending in every final status."""
    t: dict[str, int] = {}
    county, county2, senior = doctor("hosp3"), doctor("hosp3", 2), doctor("hosp1")
    put_record(chain, county, "rec-1", P3)
    put_record(chain, senior, "rec-h1", P3)
    chain.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee="institution:hosp1",
        records=["rec-1"],
        purpose="referral",
        expires_at=chain.now + DAY,
        grant_id="c-1",
    )
    chain.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee="institution:hosp3",
        records="*",
        purpose="referral",
        expires_at=chain.now + DAY,
        grant_id="c-3",
    )
    chain.ok(
        patient("hosp3"),
        "consent",
        "grant",
        grantee="institution:hosp1",
        records="*",
        purpose="consultation",
        expires_at=chain.now + DAY,
        grant_id="c-x",
    )
    # A: upward, completed.
    t["A.create"] = refer(chain, county, "A", "upward", "hosp1", ["rec-1"], consent="c-1")
    step(chain, senior, "receive", "A")
    t["A.answer"] = step(chain, senior, "accept", "A")
    step(chain, senior, "start", "A")
    t["A.complete"] = step(chain, senior, "complete", "A")
    chain.ok(senior, "records", "access", record_id="rec-1", referral="A")
    # B: horizontal by break-glass, cancelled by the requester.
    refer(chain, county2, "B", "horizontal", "hosp4", [], break_glass=True)
    step(chain, county2, "cancel", "B")
    # C: downward, rejected.
    t["C.create"] = refer(chain, senior, "C", "downward", "hosp3", ["rec-h1"], consent="c-3")
    step(chain, county, "receive", "C")
    t["C.answer"] = step(chain, county2, "reject", "C")
    # D: consultation from hosp2, never answered: failed by the sweep.
    refer(
        chain,
        doctor("hosp2"),
        "D",
        "consultation",
        "hosp1",
        [],
        consent="c-x",
        respond_within_ms=5000,
    )
    # E: MDT, 2 of 3, completed.
    members = [doctor("hosp1", 2), doctor("hosp2"), doctor("hosp4")]
    t["E.create"] = refer(
        chain,
        county,
        "E",
        "mdt",
        "hosp1",
        ["rec-1"],
        consent="c-1",
        mdt_members=[m.identity for m in members],
        mdt_required=2,
    )
    step(chain, senior, "receive", "E")
    t["E.answer"] = step(chain, senior, "accept", "E")
    step(chain, senior, "start", "E")
    step(chain, members[0], "sign", "E")
    step(chain, members[2], "sign", "E")
    t["E.complete"] = step(chain, senior, "complete", "E")
    chain.now += 10_000
    chain.ok(doctor("hosp4"), "referral", "sweep")
    chain.ok(county, "records", "erase", record_id="rec-1")
    return chain, t


def test_stats_match_the_script_exactly(scripted: tuple[Chain, dict[str, int]]) -> None:
    chain, t = scripted
    stats = chain.query(REGULATOR, "audit", "stats")
    responses = [
        t["A.answer"] - t["A.create"],
        t["C.answer"] - t["C.create"],
        t["E.answer"] - t["E.create"],
    ]
    completions = [t["A.complete"] - t["A.create"], t["E.complete"] - t["E.create"]]

    def timing(values: list[int]) -> dict[str, int]:
        return {
            "count": len(values),
            "total_ms": sum(values),
            "min_ms": min(values),
            "max_ms": max(values),
            "mean_ms": sum(values) // len(values),
        }

    assert stats == {
        "referrals": {
            "total": 5,
            "break_glass": 1,
            "followups": 0,
            "mdt_signatures": 2,
            "by_kind": {"upward": 1, "horizontal": 1, "downward": 1, "consultation": 1, "mdt": 1},
            "by_status": {"completed": 2, "cancelled": 1, "rejected": 1, "failed": 1},
            "by_from_tier": {"primary": 3, "tertiary": 1, "secondary": 1},
            "by_to_tier": {"tertiary": 3, "primary": 2},
            "by_from_institution": {"hosp3": 3, "hosp1": 1, "hosp2": 1},
            "by_to_institution": {"hosp1": 3, "hosp4": 1, "hosp3": 1},
            "response_ms": {
                "all": timing(responses),
                "upward": timing(responses[:1]),
                "downward": timing(responses[1:2]),
                "mdt": timing(responses[2:]),
            },
            "completion_ms": {
                "all": timing(completions),
                "upward": timing(completions[:1]),
                "mdt": timing(completions[1:]),
            },
        },
        "records": {"records": 2, "accesses": 1, "erasures": 1},
        "consent": {"grants": 3, "revocations": 0},
    }
    # The same numbers follow from the events integrators saw.
    created = chain.events_named("referral_create")
    assert Counter(e["kind"] for e in created) == Counter(stats["referrals"]["by_kind"])
    assert Counter(e["target_institution"] for e in created) == Counter(
        stats["referrals"]["by_to_institution"]
    )
    final: dict[str, str] = {}
    for contract, name, data in chain.events:
        if contract == "referral" and name.startswith("referral_"):
            final[data["id"]] = data["status"]
    assert Counter(final.values()) == Counter(stats["referrals"]["by_status"])
    assert len(chain.events_named("break_glass")) == stats["referrals"]["break_glass"]


def test_trace_referral(scripted: tuple[Chain, dict[str, int]]) -> None:
    chain, _t = scripted
    trace = chain.query(REGULATOR, "audit", "trace_referral", referral_id="E")
    assert [e["action"] for e in trace["events"]] == [
        "create",
        "receive",
        "accept",
        "start",
        "sign",
        "sign",
        "complete",
    ]
    assert [e["actor"] for e in trace["events"]][4:6] == [
        doctor("hosp1", 2).identity,
        doctor("hosp4").identity,
    ]
    assert [e["detail"]["to"] for e in trace["events"][1:]] == [
        "received",
        "accepted",
        "in-progress",
        "in-progress",
        "in-progress",
        "completed",
    ]
    assert trace["referral"]["status"] == "completed" and "reason_enc" not in trace["referral"]
    assert trace["referral"]["signatures"] == sorted(
        [doctor("hosp1", 2).identity, doctor("hosp4").identity]
    )
    failed = chain.query(REGULATOR, "audit", "trace_referral", referral_id="D")
    assert [e["action"] for e in failed["events"]] == ["create", "fail"]
    times = [e["time"] for e in trace["events"]]
    assert times == sorted(times)
    page = chain.query(REGULATOR, "audit", "trace_referral", referral_id="E", offset=2, limit=2)
    assert page["total"] == 7 and [e["action"] for e in page["events"]] == ["accept", "start"]


def test_trace_record_and_patient(scripted: tuple[Chain, dict[str, int]]) -> None:
    chain, _t = scripted
    record = chain.query(REGULATOR, "audit", "trace_record", record_id="rec-1")
    assert [(e["contract"], e["action"]) for e in record["events"]] == [
        ("records", "put"),
        ("consent", "consent_grant"),
        ("referral", "referral_create"),
        ("records", "access"),
        ("referral", "referral_create"),
        ("records", "erase"),
    ]
    assert record["record"]["status"] == "erased"
    assert record["events"][3]["actor"] == doctor("hosp1").identity
    assert record["events"][3]["detail"]["basis"] == "referral:A"
    person = chain.query(REGULATOR, "audit", "trace_patient", patient=P3)
    actions = [e["action"] for e in person["events"]]
    assert actions[0] == "register" and person["patient"]["identity"] == patient("hosp3").identity
    assert Counter(actions)["referral_create"] == 5
    assert actions.count("record_put") == 2 and actions.count("consent_grant") == 3
    assert actions[-2:] == ["referral_fail", "record_erase"]
    heights = [e["height"] for e in person["events"]]
    assert heights == sorted(heights)
    identity = chain.query(REGULATOR, "audit", "trace_identity", identity=doctor("hosp1").identity)
    assert [e["action"] for e in identity["events"]] == ["register_doctor"]


def test_audit_is_regulator_only_and_metadata_only(scripted: tuple[Chain, dict[str, int]]) -> None:
    chain, _t = scripted
    calls = [
        ("stats", {}),
        ("flags", {}),
        ("trace_referral", {"referral_id": "A"}),
        ("trace_record", {"record_id": "rec-1"}),
        ("trace_patient", {"patient": P3}),
        ("trace_identity", {"identity": doctor("hosp1").identity}),
    ]
    for function, args in calls:
        for who in (LEADER, admin("hosp1"), doctor("hosp1"), patient("hosp3")):
            chain.denied(who, "audit", function, **args)
        text = json.dumps(chain.query(REGULATOR, "audit", function, **args))
        assert "ENC(" not in text


def test_empty_chain_stats(chain: Chain) -> None:
    stats = chain.query(REGULATOR, "audit", "stats")
    assert stats["referrals"]["total"] == 0 and stats["records"] == {
        "records": 0,
        "accesses": 0,
        "erasures": 0,
    }
    assert chain.query(REGULATOR, "audit", "trace_referral", referral_id="none") == {
        "total": 0,
        "offset": 0,
        "events": [],
        "referral": None,
    }

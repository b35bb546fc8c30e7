"""The referral workflow through the real `medledger` CLI on a real node process
(issue 7): hosp1 is tertiary, hosp2 secondary; demo departments d01/d02 and identities
are enrolled once per module. Referrals carry no records here (record sharing belongs to
node/sdk/records.py and its tests)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netutil import Net, Run, medledger

from node.cli.main import main
from node.sdk import sealed
from node.sdk.client import Client, Identity
from node.sdk.enroll import enroll, pseudonym_of

DAY_MS = 86_400_000
REASON = "胸痛 3 天, 疑似急性冠脉综合征 (suspected ACS)"


class World:
    def __init__(self, net: Net, client: Client) -> None:
        self.net = net
        self.client = client
        self.created: Counter[str] = Counter()  # kind -> referrals this module created
        self.status: Counter[str] = Counter()  # final status -> count
        self.break_glass = 0
        self.signatures = 0
        self.followups = 0
        self.grants: dict[str, str] = {}
        self.subprocess = False

    def ident(self, name: str) -> Identity:
        return Identity.load(self.net.identity(name))

    def cli(self, who: str, *args: str) -> Run:
        argv = [*args, "--node", self.net.api, "--identity", str(self.net.identity(who))]
        if self.subprocess:
            return medledger(*argv, "--json")
        # The same CLI code in this process: a new `medledger` process per call costs
        # seconds of imports; the main path below runs the real console command.
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([*argv, "--json"])
        return Run(rc, out.getvalue(), err.getvalue())

    def ok(self, who: str, *args: str) -> Any:
        run = self.cli(who, *args)
        assert run.rc == 0, f"{args}: rc {run.rc}\n{run.out}\n{run.err}"
        return run.json()

    def refused(self, who: str, *args: str) -> dict[str, Any]:
        run = self.cli(who, *args)
        assert run.rc == 1, f"{args}: expected a refusal (rc 1), got {run.rc}\n{run.out}{run.err}"
        answer: dict[str, Any] = run.json()
        assert answer["ok"] is False
        return answer

    def consent(self, patient: str, institution: str) -> str:
        """The patient's consent grant to refer (all records) to `institution`."""
        key = f"{patient}>{institution}"
        if key not in self.grants:
            args = {
                "grantee": "institution:" + institution,
                "records": "*",
                "purpose": "referral",
                "expires_at": int(time.time() * 1000) + DAY_MS,
            }
            grant = self.client.call(self.ident(patient), "consent", "grant", args)
            self.grants[key] = grant["id"]
        return self.grants[key]

    def create(self, who: str, *args: str, kind: str = "upward") -> dict[str, Any]:
        verb = ("consult", "request") if kind in ("consultation", "mdt") else ("referral", "create")
        made: dict[str, Any] = self.ok(who, *verb, "--kind", kind, *args)
        assert made["status"] == "requested"
        self.created[kind] += 1
        if "--break-glass" in args:
            self.break_glass += 1
        return made


@pytest.fixture(scope="module")
def world(consortium_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("referral") / "c"
    shutil.copytree(consortium_template, root)
    net = Net(root)
    net.start()
    try:
        with Client(net.api) as client:
            enroll(client, root)
            yield World(net, client)
    finally:
        net.stop()


def _upward(world: World, reason: str = REASON, *extra: str) -> dict[str, Any]:
    consent = world.consent("hosp2-patient1", "hosp1")
    return world.create(
        "hosp2-doctor1",
        "--patient",
        "hosp2-patient1",
        "--to",
        "hosp1",
        "--department",
        "d01",
        "--reason",
        reason,
        "--consent",
        consent,
        *extra,
    )


def test_upward_referral_full_path_and_who_may_act(world: World) -> None:
    world.subprocess = True  # create and complete run `python -m node` itself
    made = _upward(world, REASON, "--department-name", "Cardiology")
    rid = made["referral"]
    assert made["patient"] == pseudonym_of("hosp2-patient1")
    assert made["target_institution"] == "hosp1" and made["shared"] == {}
    world.subprocess = False
    assert world.ok("hosp1-doctor1", "referral", "receive", "--id", rid)["status"] == "received"
    denied = world.refused("hosp2-patient1", "referral", "accept", "--id", rid)
    assert "role 'patient' may not" in denied["message"]
    denied = world.refused("hosp1-doctor2", "referral", "accept", "--id", rid)
    assert "only doctors of the target department" in denied["message"]

    for verb, status in (("accept", "accepted"), ("start", "in-progress")):
        answer = world.ok("hosp1-doctor1", "referral", verb, "--id", rid)
        assert answer["status"] == status and answer["applied"] is True
    world.subprocess = True
    done = world.ok(
        "hosp1-doctor1", "referral", "complete", "--id", rid, "--outcome", "PCI done, stable"
    )
    assert done["status"] == "completed"
    world.status["completed"] += 1
    world.subprocess = False

    for reader in ("hosp1-doctor1", "hosp2-doctor1"):
        ref = world.ok(reader, "referral", "get", "--id", rid)
        assert ref["status"] == "completed" and ref["sealed"] == []
        assert ref["reason"] == REASON and ref["department_name"] == "Cardiology"
        assert ref["outcome"] == "PCI done, stable"
        assert "reason_enc" not in ref

    inbox = world.ok("hosp1-doctor1", "referral", "inbox")["items"]
    assert {"id": rid, "kind": "upward", "status": "completed"}.items() <= next(
        i for i in inbox if i["id"] == rid
    ).items()


def test_regulator_sees_metadata_and_cannot_open_sealed_fields(world: World) -> None:
    made = _upward(world, "confidential reason")
    rid = made["referral"]
    as_regulator = world.ok("regulator", "referral", "get", "--id", rid)
    assert as_regulator["status"] == "requested" and as_regulator["reason"] is None
    assert "confidential" not in json.dumps(as_regulator)
    as_party = world.ok("hosp1-doctor1", "referral", "get", "--id", rid, "--ciphertext")
    assert as_party["reason"] == "confidential reason"
    with pytest.raises(sealed.NotAParty, match="not a party"):
        sealed.open_text(world.ident("regulator"), as_party["reason_enc"])
    # A doctor outside the parties sees nothing of it at all.
    world.refused("hosp2-doctor2", "referral", "get", "--id", rid)
    trace = world.ok("regulator", "audit", "trace", "referral", rid)
    assert [e["action"] for e in trace["events"]] == ["create"]
    assert "reason_enc" not in trace["referral"]
    world.ok("hosp2-doctor1", "referral", "cancel", "--id", rid)
    world.status["cancelled"] += 1


def test_tier_rules_and_consent(world: World) -> None:
    denied = world.refused(
        "hosp1-doctor1",
        "referral",
        "create",
        "--kind",
        "upward",
        "--patient",
        "hosp2-patient2",
        "--to",
        "hosp2",
        "--department",
        "d01",
        "--reason",
        "x",
        "--consent",
        "g-unused",
    )
    assert "higher tier than tertiary" in denied["message"]

    base = ["--patient", "hosp2-patient2", "--to", "hosp1", "--department", "d01"]
    base += ["--reason", "collapsed in the ER"]
    missing = world.cli("hosp2-doctor1", "referral", "create", "--kind", "upward", *base)
    assert missing.rc == 2 and "--break-glass" in missing.err
    # A consent grant of another patient does not cover this one.
    other = world.consent("hosp2-patient1", "hosp1")
    denied = world.refused(
        "hosp2-doctor1", "referral", "create", "--kind", "upward", *base, "--consent", other
    )
    assert "another patient" in denied["message"]

    made = world.create("hosp2-doctor1", *base, "--break-glass")
    assert made["break_glass"] is True
    flags = world.ok("regulator", "audit", "flags")
    flagged = [e["detail"]["referral"] for e in flags["events"]]
    assert made["referral"] in flagged
    world.status["requested"] += 1
    # Only the regulator audits.
    world.refused("hosp1-doctor1", "audit", "flags")


def test_deadline_passes_and_the_referral_fails(world: World) -> None:
    rid = _upward(world, "short deadline", "--respond-within-ms", "1500")["referral"]
    regulator = world.ident("regulator")
    deadline = time.monotonic() + 20
    n = 0
    while True:
        stats = world.client.query(regulator, "audit", "stats", {})
        if stats["referrals"]["by_status"].get("failed", 0) >= 1:
            break
        assert time.monotonic() < deadline, "the sweep never failed the referral"
        # Blocks are cut only when there are transactions: cut one.
        world.client.call(world.ident("hosp1-doctor1"), "kv", "put", {"key": f"t{n}", "value": n})
        n += 1
    world.status["failed"] += 1
    assert world.ok("hosp1-doctor1", "referral", "get", "--id", rid)["status"] == "failed"
    late = world.refused("hosp1-doctor1", "referral", "receive", "--id", rid)
    assert "cannot receive" in late["message"]


def test_mdt_completes_only_with_n_of_m_signatures(world: World) -> None:
    consent = world.consent("hosp2-patient1", "hosp1")
    made = world.create(
        "hosp2-doctor1",
        "--patient",
        "hosp2-patient1",
        "--to",
        "hosp1",
        "--department",
        "d01",
        "--reason",
        "tumour board",
        "--consent",
        consent,
        "--members",
        "hosp1-doctor2,hosp2-doctor2",
        "--required",
        "2",
        kind="mdt",
    )
    rid = made["referral"]
    assert len(made["parties"]) == 4
    for verb in ("receive", "accept", "start"):
        world.ok("hosp1-doctor1", "referral", verb, "--id", rid)
    denied = world.refused("hosp1-doctor1", "referral", "complete", "--id", rid)
    assert "needs 2 sign-offs, it has 0" in denied["message"]
    world.ok("hosp1-doctor2", "consult", "sign", "--id", rid, "--opinion", "resect")
    denied = world.refused("hosp1-doctor1", "referral", "complete", "--id", rid)
    assert "it has 1" in denied["message"]
    world.refused("hosp1-doctor1", "consult", "sign", "--id", rid)  # not a member
    world.ok("hosp2-doctor2", "consult", "sign", "--id", rid, "--opinion", "chemo first")
    world.signatures += 2
    assert world.ok("hosp1-doctor1", "referral", "complete", "--id", rid)["status"] == "completed"
    world.status["completed"] += 1
    ref = world.ok("hosp2-doctor2", "referral", "get", "--id", rid)
    opinions = sorted(s["opinion"] for s in ref["signatures"].values())
    assert opinions == ["chemo first", "resect"] and ref["reason"] == "tumour board"
    as_regulator = world.ok("regulator", "referral", "get", "--id", rid, "--ciphertext")
    assert sorted(as_regulator["signatures"]) == sorted(made["parties"][2:])
    assert "opinion_enc" not in json.dumps(as_regulator)
    assert "reason_enc" not in as_regulator and as_regulator["reason"] is None


def test_downward_referral_with_followup(world: World) -> None:
    consent = world.consent("hosp2-patient1", "hosp2")
    made = world.create(
        "hosp1-doctor1",
        "--patient",
        "hosp2-patient1",
        "--to",
        "hosp2",
        "--department",
        "d02",
        "--reason",
        "rehabilitation after PCI",
        "--consent",
        consent,
        kind="downward",
    )
    rid = made["referral"]
    for verb in ("receive", "accept"):
        world.ok("hosp2-doctor2", "referral", verb, "--id", rid)
    world.ok("hosp2-doctor2", "followup", "add", "--id", rid, "--note", "walking 2 km, BP ok")
    world.followups += 1
    world.status["accepted"] += 1
    ref = world.ok("hosp1-doctor1", "referral", "get", "--id", rid)
    assert [e["note"] for e in ref["followup_entries"]] == ["walking 2 km, BP ok"]
    trace = world.ok("regulator", "audit", "trace", "patient", "hosp2-patient1")
    assert "referral_followup_add" in [e["action"] for e in trace["events"]]


def test_watch_yields_the_create_event_for_the_target_institution(world: World) -> None:
    made = _upward(world, "for the HIS")
    world.status["requested"] += 1
    admin = str(world.net.identity("hosp1-admin"))
    argv = [sys.executable, "-m", "node", "referral", "watch", "--node", world.net.api]
    argv += ["--identity", admin, "--json", "--from-height", str(made["height"]), "--count", "1"]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    event = json.loads(proc.stdout.splitlines()[0])
    assert event["event"] == "referral_create" and event["id"] == made["referral"]
    assert event["target_institution"] == "hosp1" and event["height"] == made["height"]
    assert "reason_enc" not in event


def test_audit_stats_match_what_the_tests_did(world: World) -> None:
    stats = world.ok("regulator", "audit", "stats")["referrals"]
    assert stats["total"] == sum(world.created.values())
    assert stats["by_kind"] == {k: v for k, v in world.created.items() if v}
    assert stats["by_status"] == {k: v for k, v in world.status.items() if v}
    assert stats["break_glass"] == world.break_glass
    assert stats["mdt_signatures"] == world.signatures
    assert stats["followups"] == world.followups

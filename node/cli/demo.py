"""`medledger demo`: a local consortium of separate node processes and the referral
story of DESIGN §7, end to end, each step printed in plain words.

The network: hosp1 (tertiary, "provincial", region-a), hosp2 (secondary, region-b),
hosp3 (primary, region-a), hosp4 (primary, "county", region-b), hosp1-3 consenters,
hosp4 and the regulator following the chain. The story: a county doctor uploads a
patient's EMR and refers the patient upward to the provincial hospital, whose doctor
decrypts it; an MDT signs off (2 of 3); the patient goes back downward for
rehabilitation and a follow-up closes the loop; another referral misses its deadline
and fails on every node; an emergency goes through break-glass; the regulator traces the
patient and prints statistics, which the demo checks against the chain's events.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.ledger.verify import verify_path
from node.localnet import _nodes, down, up
from node.records.fhir import synthetic_bundle
from node.sdk import enroll, records
from node.sdk import referral as referrals
from node.sdk.client import Client, ClientError, Identity
from node.sdk.consortium import Consortium

DAY_MS = 86_400_000
HOSPITALS = {
    "hosp1": "Provincial Hospital (tertiary, region-a)",
    "hosp2": "City Hospital (secondary, region-b)",
    "hosp3": "Community Hospital (primary, region-a)",
    "hosp4": "County Hospital (primary, region-b)",
}


class DemoFailed(Exception):
    pass


class Story:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.apis = {name: api for name, _config, api in _nodes(root)}
        self.step_no = 0
        self.d = enroll.load_directory(root)

    def step(self, text: str) -> None:
        self.step_no += 1
        print(f"\n[{self.step_no}] {text}", flush=True)

    @staticmethod
    def say(text: str) -> None:
        print(f"    {text}", flush=True)

    @contextmanager
    def at(self, node: str) -> Iterator[Client]:
        with Client(self.apis[node], timeout_s=60) as client:
            yield client

    def who(self, name: str) -> Identity:
        return self.d[name]

    def refer(self, node: str, doctor: str, patient: str, **fields: Any) -> dict[str, Any]:
        """`doctor` (through `node`) refers the demo patient `patient`."""
        with self.at(node) as c:
            return referrals.create(
                c, self.who(doctor), patient=self.d.pseudonyms[patient], **fields
            )


def run_demo(keep: Path | None) -> int:
    work = keep if keep is not None else Path(tempfile.mkdtemp(prefix="medledger-demo-"))
    root = work / "consortium"
    try:
        return _run(root)
    except DemoFailed as exc:
        print(f"\ndemo FAILED: {exc}")
        return 1
    finally:
        down(root)
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\nnetwork data and logs kept in {work}")


def _run(root: Path) -> int:
    started = time.monotonic()
    print("MedLedger demo: a cross-region referral, end to end, on a local consortium")
    print("(4 hospitals and the regulator, each a separate node process on 127.0.0.1)")
    up(root, hospitals=4, consenters=3, regulator=True)
    story = Story(root)
    story.step("the consortium is up")
    for name, api in story.apis.items():
        with story.at(name) as c:
            s = c.status()
        print(
            f"    {name:<10} {HOSPITALS.get(name, 'Regional Health Commission'):<42} "
            f"role={s.role:<9} gRPC {api}"
        )
    _enroll(story)
    record_id, consent_up = _upload(story)
    upward = _refer_upward(story, record_id, consent_up)
    _mdt(story, record_id, consent_up, upward)
    _complete_upward(story, upward)
    _refer_downward(story, record_id, upward)
    late = _missed_deadline(story)
    _break_glass(story, late)
    _regulator(story, upward)
    _verify(story)
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s")
    return 0


def _enroll(story: Story) -> None:
    story.step("each hospital's admin registers its departments, doctors and patients")
    with story.at("hosp1") as c:
        enroll.enroll(c, story.root)
    for inst in story.d.institutions:
        story.say(
            f"{inst}: departments d01 (internal medicine), d02 (rehabilitation); "
            f"{inst}-doctor1 in d01, {inst}-doctor2 in d02; 2 patients"
        )
    story.say(
        "patients appear on chain only as pseudonyms, e.g. hosp4-patient1 -> "
        f"{story.d.pseudonyms['hosp4-patient1']}"
    )
    story.say("every doctor and patient registered an HPKE encryption key (ML-KEM-768 + X25519)")


def _consent(
    story: Story, node: str, patient: str, institution: str, records: str | list[str], days: int
) -> str:
    """The patient consents to a referral to `institution`; returns the grant id."""
    with story.at(node) as c:
        admin = Consortium(c, story.who(patient), story.root)
        expires = int(time.time() * 1000) + days * DAY_MS
        grant = admin.grant_consent(f"institution:{institution}", records, "referral", expires)
    return str(grant.result["id"])


def _upload(story: Story) -> tuple[str, str]:
    story.step("at the county hospital (hosp4), doctor1 uploads the patient's EMR")
    patient = story.d.pseudonyms["hosp4-patient1"]
    emr = synthetic_bundle("county-patient-1", condition="Unstable angina pectoris")
    with story.at("hosp4") as c:
        put = records.put(c, story.who("hosp4-doctor1"), patient, emr)
    story.say(f"FHIR R4B Bundle validated, encrypted in the doctor's client, {put.size} bytes")
    story.say(
        f"ciphertext stored in hosp4's vault; on chain only record {put.record_id[:12]}…, "
        f"content hash {put.content_hash[:16]}…, height {put.height}"
    )
    story.step("the patient consents to a referral to the provincial hospital (hosp1)")
    grant_id = _consent(story, "hosp4", "hosp4-patient1", "hosp1", [put.record_id], 30)
    story.say(f"consent grant {grant_id} (purpose referral, 30 days), signed by the patient")
    return put.record_id, grant_id


def _refer_upward(story: Story, record_id: str, consent: str) -> str:
    story.step("hosp4-doctor1 refers the patient upward to hosp1, department d01")
    made = story.refer(
        "hosp4",
        "hosp4-doctor1",
        "hosp4-patient1",
        kind="upward",
        target_institution="hosp1",
        target_department="d01",
        department_name="Cardiology",
        reason="Unstable angina, troponin rising: PCI evaluation",
        records=[record_id],
        consent=consent,
    )
    ref_id = str(made["referral"])
    story.say(f"referral {ref_id} is {made['status']} (primary -> tertiary, region-b -> a)")
    story.say(
        "reason and department are sealed to the parties; the record key was wrapped "
        f"for hosp1's d01 doctors: {len(made.get('shared', {}).get(record_id, []))}"
    )
    story.step("hosp1-doctor1 receives and accepts it, then reads the EMR")
    doctor = story.who("hosp1-doctor1")
    with story.at("hosp1") as c:
        referrals.receive(c, doctor, ref_id)
        accepted = referrals.accept(c, doctor, ref_id)
        story.say(f"referral {ref_id} is {accepted['status']}")
        opened = referrals.get(c, doctor, ref_id)
        story.say(f"the sealed reason, opened by the receiving doctor: {opened.get('reason')!r}")
        out = story.root / "received" / "emr.json"
        got = records.get(c, doctor, record_id, out, referral=ref_id)
    bundle = json.loads(out.read_bytes())
    condition = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"
    )
    story.say(
        f"recorded access {got.access_tx[:12]}…; fetched from {got.vault_node}'s vault over "
        "libp2p, every chunk checked against the on-chain hash"
    )
    story.say(f"decrypted EMR: Condition {condition['code']['text']!r}, {got.size} bytes")
    return ref_id


def _mdt(story: Story, record_id: str, consent: str, upward: str) -> None:
    story.step("hosp1-doctor1 asks for an MDT: 3 specialists, 2 must sign off")
    members = [story.who(n).id for n in ("hosp1-doctor2", "hosp2-doctor1", "hosp2-doctor2")]
    with story.at("hosp1") as c:
        made = referrals.consult_request(
            c,
            story.who("hosp1-doctor1"),
            kind="mdt",
            mdt_members=members,
            mdt_required=2,
            patient=story.d.pseudonyms["hosp4-patient1"],
            target_institution="hosp1",
            target_department="d02",
            reason="MDT: PCI now or medical therapy first?",
            records=[record_id],
            consent=consent,
            read_via=upward,
        )
        mdt = str(made["referral"])
        story.say(
            f"MDT {mdt} requested of hosp1 d02 with members hosp1-doctor2, "
            "hosp2-doctor1, hosp2-doctor2"
        )
        lead = story.who("hosp1-doctor2")
        referrals.receive(c, lead, mdt)
        accepted = referrals.accept(c, lead, mdt)
        referrals.start(c, lead, mdt)
        story.say(
            f"hosp1-doctor2 accepts and starts it; record key shared with the members: "
            f"{len(accepted.get('shared', {}).get(record_id, []))}"
        )
        referrals.consult_sign(c, lead, mdt, "Agree: PCI within 24 h")
        story.say("hosp1-doctor2 signs (1 of 2)")
        try:
            referrals.complete(c, lead, mdt, "premature")
        except ClientError as exc:
            story.say(f"completing with 1 of 2 signatures is refused: {exc}")
        else:
            raise DemoFailed("an MDT completed with 1 of 2 signatures")
    member = story.who("hosp2-doctor1")
    with story.at("hosp2") as c:
        out = story.root / "received" / "mdt-emr.json"
        records.get(c, member, record_id, out, referral=mdt)
        story.say("hosp2-doctor1 (another region) reads the EMR through the MDT and signs (2 of 2)")
        referrals.consult_sign(c, member, mdt, "Agree")
    with story.at("hosp1") as c:
        done = referrals.complete(c, lead, mdt, "Decision: PCI within 24 h")
    story.say(f"MDT {mdt} is {done['status']}")


def _complete_upward(story: Story, upward: str) -> None:
    story.step("the provincial hospital treats the patient and completes the referral")
    doctor = story.who("hosp1-doctor1")
    with story.at("hosp1") as c:
        referrals.start(c, doctor, upward)
        done = referrals.complete(c, doctor, upward, "PCI done, stable; rehab at county level")
    story.say(f"referral {upward} is {done['status']}")


def _refer_downward(story: Story, record_id: str, upward: str) -> None:
    story.step("the patient goes back downward to hosp4 (rehabilitation) for follow-up")
    grant_id = _consent(story, "hosp4", "hosp4-patient1", "hosp4", [record_id], 30)
    down_id = story.refer(
        "hosp1",
        "hosp1-doctor1",
        "hosp4-patient1",
        kind="downward",
        target_institution="hosp4",
        target_department="d02",
        reason="Cardiac rehabilitation after PCI",
        records=[record_id],
        consent=grant_id,
        read_via=upward,
    )["referral"]
    story.say(f"referral {down_id} requested (tertiary -> primary)")
    rehab = story.who("hosp4-doctor2")
    with story.at("hosp4") as c:
        referrals.receive(c, rehab, down_id)
        referrals.accept(c, rehab, down_id)
        referrals.start(c, rehab, down_id)
        note = synthetic_bundle("county-patient-1", condition="Cardiac rehabilitation, week 1")
        follow = records.put(c, rehab, story.d.pseudonyms["hosp4-patient1"], note)
        referrals.followup_add(
            c, rehab, down_id, "Week 1: walking 20 min, no angina", follow.record_id
        )
        done = referrals.complete(c, rehab, down_id, "Rehabilitation completed")
    story.say("hosp4-doctor2 accepts, uploads a follow-up record and a sealed note, completes:")
    story.say(f"referral {down_id} is {done['status']}; the loop is closed")


def _missed_deadline(story: Story) -> str:
    story.step("hosp3 refers another patient horizontally to hosp4 with a 2-second deadline")
    grant_id = _consent(story, "hosp3", "hosp3-patient1", "hosp4", "*", 1)
    ref_id = story.refer(
        "hosp3",
        "hosp3-doctor1",
        "hosp3-patient1",
        kind="horizontal",
        target_institution="hosp4",
        target_department="d01",
        reason="Second opinion, routine",
        consent=grant_id,
        respond_within_ms=2000,
    )["referral"]
    story.say(f"referral {ref_id} requested; nobody at hosp4 answers in time")
    return str(ref_id)


def _break_glass(story: Story, late: str) -> None:
    time.sleep(2.2)  # let the deadline pass (the demo's only wait on a clock)
    story.step("an emergency at hosp2: an upward referral without consent (break-glass)")
    emergency = story.refer(
        "hosp2",
        "hosp2-doctor1",
        "hosp2-patient1",
        kind="upward",
        target_institution="hosp1",
        target_department="d01",
        reason="Unconscious, suspected stroke",
        break_glass=True,
    )["referral"]
    story.say(f"referral {emergency} committed with break_glass: flagged for the regulator")
    story.say(
        "its block is the first after the deadline: the end-of-block sweep fails the "
        "late referral at the same height on every node"
    )
    heights = {}
    deadline = time.monotonic() + 30
    for node in story.apis:
        with story.at(node) as c:
            while True:
                ref = c.query(story.who("hosp4-doctor1"), "referral", "get", {"referral_id": late})
                if ref["status"] == "failed" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        if ref["status"] != "failed":
            raise DemoFailed(f"referral {late} is {ref['status']} on {node}, not failed")
        heights[node] = ref.get("failed_at")
    story.say(
        f"referral {late} is failed on all {len(heights)} nodes (failed_at identical: "
        f"{len(set(heights.values())) == 1})"
    )


def _tally(story: Story) -> dict[str, Any]:
    """The regulator's figures, recomputed from the events of every block."""
    kinds: Counter[str] = Counter()
    status: dict[str, str] = {}
    counts: Counter[str] = Counter()
    with story.at("regulator") as c:
        tip = c.status().height
        for height in range(1, tip + 1):
            results = c.block(height).results
            for result in [*results.results, results.end_of_block]:
                for event in result.events:
                    data = json.loads(event.data or b"{}")
                    name = f"{event.contract}.{event.name}"
                    counts[name] += 1
                    if name == "referral.referral_create":
                        kinds[data["kind"]] += 1
                        counts["break_glass"] += bool(data["break_glass"])
                    if event.contract == "referral" and "id" in data:
                        status[data["id"]] = data["status"]
    return {
        "referrals": counts["referral.referral_create"],
        "by_kind": dict(kinds),
        "by_status": dict(Counter(status.values())),
        "break_glass": counts["break_glass"],
        "mdt_signatures": counts["referral.referral_sign"],
        "followups": counts["referral.referral_followup_add"],
        "records": counts["records.record_put"],
        "accesses": counts["records.access"],
        "consent_grants": counts["consent.consent_granted"],
    }


def _regulator(story: Story, upward: str) -> None:
    story.step("the regulator traces the patient (metadata only, never plaintext)")
    regulator = Identity.load(story.root / "identities" / "regulator")
    pseudonym = story.d.pseudonyms["hosp4-patient1"]
    with story.at("regulator") as c:
        trace = referrals.audit_trace(c, regulator, "patient", pseudonym)
        entries = trace.get("events", [])
        story.say(f"{len(entries)} entries for {pseudonym}:")
        for e in entries:
            story.say(
                f"  h{e['height']:<4} {e['contract']:<9} {e['action']:<24} "
                f"by {e['actor_role']} of {e['actor_institution']}"
            )
        flags = referrals.audit_flags(c, regulator)
        for flag in flags.get("events", []):
            detail = flag.get("detail", {})
            story.say(
                f"break-glass flag: referral {detail.get('referral')} by "
                f"{detail.get('institution')} to {detail.get('target_institution')}"
            )
        seen = referrals.get(c, regulator, upward)
        story.say(
            f"the regulator's view of referral {upward}: status {seen['status']}, "
            f"reason {seen.get('reason')!r} (sealed fields stay closed)"
        )
        stats = referrals.audit_stats(c, regulator)
    story.step("the regulator's statistics, checked against the chain's events")
    ref = stats["referrals"]
    figures = {
        "referrals": ref["total"],
        "by_kind": ref["by_kind"],
        "by_status": ref["by_status"],
        "break_glass": ref["break_glass"],
        "mdt_signatures": ref["mdt_signatures"],
        "followups": ref["followups"],
        "records": stats["records"]["records"],
        "accesses": stats["records"]["accesses"],
        "consent_grants": stats["consent"]["grants"],
    }
    events = _tally(story)
    for key, value in figures.items():
        mark = "ok" if events[key] == value else f"MISMATCH (events say {events[key]})"
        story.say(f"{key:<15} {json.dumps(value, sort_keys=True):<60} {mark}")
    response = ref["response_ms"].get("all", {})
    if response:
        story.say(f"response time: mean {response['mean_ms']} ms over {response['count']}")
    if events != figures:
        raise DemoFailed("the regulator's statistics do not match the events")


def _verify(story: Story) -> None:
    story.step("stopping every node (SIGTERM) and verifying each ledger offline")
    with story.at("hosp1") as c:
        target = c.status().height
    deadline = time.monotonic() + 30
    for name in story.apis:
        with story.at(name) as c:
            while c.status().height < target and time.monotonic() < deadline:
                time.sleep(0.1)
    down(story.root)
    tips = set()
    for name, config, _api in _nodes(story.root):
        report = verify_path(str(config.parent / "data"))
        story.say(
            f"{name:<10} ok={report.ok} height={report.height} "
            f"{report.last_block_hash[:16] if report.ok else report.problem}"
        )
        if not report.ok:
            raise DemoFailed(f"{name}'s ledger failed verification: {report.problem}")
        tips.add(report.height)
    story.say(f"all ledgers verify; {len(tips)} distinct tip height(s) across nodes")

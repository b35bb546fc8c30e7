"""Every (status, action) pair of the referral state machine, written out by hand from
DESIGN §7 rather than derived from the contract's table: each action is tried by the
caller entitled to it, from every status, on a downward referral (hosp1 -> hosp3)."""

from __future__ import annotations

import pytest

from tests.business_contracts.world import Chain, doctor, pseudonym, put_record

P3 = pseudonym("hosp3")
SENIOR = doctor("hosp1")  # requester (tertiary)
COUNTY = doctor("hosp3")  # target department d01 (primary): receives, accepts, starts

# status -> {action: status after it}; every action not listed must be refused.
ALLOWED = {
    "requested": {"receive": "received", "cancel": "cancelled"},
    "received": {"accept": "accepted", "reject": "rejected", "cancel": "cancelled"},
    "accepted": {"start": "in-progress", "cancel": "cancelled", "followup_add": "accepted"},
    "in-progress": {"complete": "completed", "followup_add": "in-progress"},
    "completed": {"followup_add": "completed"},
    "rejected": {},
    "cancelled": {},
    "failed": {},
}
ACTIONS = ("receive", "accept", "reject", "start", "complete", "cancel", "followup_add")
PATHS = {
    "requested": (),
    "received": ("receive",),
    "accepted": ("receive", "accept"),
    "in-progress": ("receive", "accept", "start"),
    "completed": ("receive", "accept", "start", "complete"),
    "rejected": ("receive", "reject"),
    "cancelled": ("cancel",),
    "failed": ("sweep",),
}


def actor(action: str):
    return SENIOR if action in ("cancel", "followup_add") else COUNTY


def do(chain: Chain, action: str):
    args = {"referral_id": "R"}
    if action == "followup_add":
        args["note_enc"] = "ENC(note)"
    return chain.call(actor(action), "referral", action, **args)


def reach(chain: Chain, status: str) -> None:
    put_record(chain, SENIOR, "rec-m", P3)
    chain.ok(
        SENIOR,
        "referral",
        "create",
        referral_id="R",
        patient=P3,
        kind="downward",
        target_institution="hosp3",
        target_department="d01",
        department_enc="E",
        reason_enc="E",
        records=["rec-m"],
        break_glass=True,
        respond_within_ms=60_000,
    )
    for action in PATHS[status]:
        if action == "sweep":
            chain.now += 120_000
            assert chain.ok(SENIOR, "referral", "sweep") == {"failed": ["R"]}
        else:
            assert do(chain, action).code == 0, action
    assert chain.value("referral", "referral/R")["status"] == status


@pytest.mark.parametrize("status", list(ALLOWED))
@pytest.mark.parametrize("action", ACTIONS)
def test_transition(chain: Chain, status: str, action: str) -> None:
    reach(chain, status)
    before = dict(chain.state.data)
    outcome = do(chain, action)
    after_status = chain.value("referral", "referral/R")["status"]
    if action in ALLOWED[status]:
        assert outcome.code == 0, outcome.message
        assert after_status == ALLOWED[status][action]
    else:
        assert outcome.code.name == "CONTRACT_ERROR", (outcome.code.name, outcome.message)
        assert chain.state.data == before and after_status == status

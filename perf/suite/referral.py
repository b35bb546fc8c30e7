"""The referral workload (issue 9: "referral create+accept with 2 KB encrypted payloads").

Setup, once per consortium and before any round's first height is read (so none of its
transactions counts): `node.sdk.enroll` registers the demo departments (d01, d02), doctors,
patients and encryption keys, then every demo patient grants `institution:<T>` access to
all their records for purpose `referral`, for every institution T (one grant each, made
once up front; the grant ids are fixed, see `grant_id`).

A *chain* is one referral's three transactions, each counted as one transaction:

    referral.create  by a doctor of institution A, explicit `referral_id`, a ~2 KB opaque
                     base64 `reason_enc` (random bytes stand in for ciphertext) and the
                     patient's consent grant to the target institution T
    referral.receive by the target department's doctor   (requested -> received)
    referral.accept  by the same doctor                 (received  -> accepted)

All three are signed before the timed window. Only the creates follow the round's
schedule, at a third of the round's rate; the client releases a chain's receive when it
sees its create committed VALID on its block stream, and the accept when the receive is
(`Chains`, used by `sender.Sender`). At steady state the offered load is then the round's
rate, and it stays controlled: the creates are open loop, and a dependent transaction is
sent within one tick of its parent's commit. A chain whose create or receive failed does
not send the rest; those count as failed (`PARENT_FAILED`).

Chains cycle over every (requester institution and doctor, patient, target institution
and department) combination the contract allows, starting at a different place in each
client process, so every institution signs a similar share and no institution's mempool
quota (`institution_share` of the pool) fills before the others'. The kind follows the
tiers: upward / downward / horizontal between institutions, consultation (any tier) to the
other department of the requester's own institution.
"""

from __future__ import annotations

import base64
import collections
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from node.genesis import load as load_genesis
from node.sdk import enroll
from node.sdk.client import Client, ClientError

STEPS = ("create", "receive", "accept")
REASON_BYTES = 1536  # base64: 2,048 characters of "ciphertext"
DEPARTMENT_BYTES = 48  # base64: 64 characters
GRANT_TERM_MS = 24 * 3600 * 1000
_RANK = {"primary": 1, "secondary": 2, "tertiary": 3}
DEPARTMENT_OF_DOCTOR = {1: "d01", 2: "d02"}  # enroll: doctor1 in d01, doctor2 in d02


@dataclass(frozen=True)
class Route:
    """One kind of chain: who refers which patient where, and who answers."""

    requester: str  # identity folder name, e.g. hosp2-doctor1
    patient: str  # identity folder name of the patient (for the grant id)
    pseudonym: str
    kind: str
    target_institution: str
    target_department: str
    target_doctor: str  # identity folder name of the doctor who receives and accepts
    consent: str  # the grant id


@dataclass(frozen=True)
class Setup:
    routes: tuple[Route, ...]
    institutions: tuple[str, ...]
    setup_s: float
    setup_txs: int


def grant_id(patient: str, institution: str) -> str:
    return f"g-perf-{patient}-{institution}"


def _kind(source: str, target: str, tiers: dict[str, str]) -> str:
    if source == target:
        return "consultation"
    a, b = _RANK[tiers[source]], _RANK[tiers[target]]
    return "upward" if b > a else "downward" if b < a else "horizontal"


def routes(institutions: list[str], tiers: dict[str, str]) -> list[Route]:
    out = []
    for target in institutions:
        for src in institutions:
            for n in (1, 2):
                requester_dept = DEPARTMENT_OF_DOCTOR[n]
                for m, dept in DEPARTMENT_OF_DOCTOR.items():
                    if src == target and dept == requester_dept:
                        continue  # a referral goes to another department
                    patient = f"{src}-patient{n}"
                    out.append(
                        Route(
                            requester=f"{src}-doctor{n}",
                            patient=patient,
                            pseudonym=enroll.pseudonym_of(patient),
                            kind=_kind(src, target, tiers),
                            target_institution=target,
                            target_department=dept,
                            target_doctor=f"{target}-doctor{m}",
                            consent=grant_id(patient, target),
                        )
                    )
    return out


def setup(root: Any, api: str, timeout_s: float = 120.0) -> Setup:
    """Enroll the demo consortium under `root` through the node at `api` and make the
    consent grants; returns the routes the client processes spread their chains over."""
    started = time.monotonic()
    with Client(api, timeout_s=60) as client:
        directory = enroll.enroll(client, root, timeout_s)
        genesis = load_genesis(root / "genesis.block")
        tiers = {i.id: i.tier for i in genesis.config.institutions}
        institutions = [i for i in directory.institutions if i in tiers]
        expires = int(time.time() * 1000) + GRANT_TERM_MS
        raws = []
        for patient in directory.pseudonyms:
            for target in institutions:
                args = {
                    "grantee": f"institution:{target}",
                    "records": "*",
                    "purpose": "referral",
                    "expires_at": expires,
                    "grant_id": grant_id(patient, target),
                }
                raws.append(client.build(directory[patient], "consent", "grant", args))
        for res in client.submit_all(raws, timeout_s):
            if res.status != "committed" or res.code != "VALID":
                raise ClientError(f"consent grant: {res.status} {res.code}: {res.message}")
    # enroll: departments, doctors + patients, keys (2 + 4 + 4 per institution).
    count = 10 * len(directory.institutions) + len(raws)
    return Setup(
        tuple(routes(institutions, tiers)), tuple(institutions), time.monotonic() - started, count
    )


def chain_calls(route: Route, referral_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(signer, function, args) of the chain's create, receive and accept."""
    create = {
        "patient": route.pseudonym,
        "kind": route.kind,
        "target_institution": route.target_institution,
        "target_department": route.target_department,
        "department_enc": base64.b64encode(os.urandom(DEPARTMENT_BYTES)).decode(),
        "reason_enc": base64.b64encode(os.urandom(REASON_BYTES)).decode(),
        "consent": route.consent,
        "break_glass": False,
        "referral_id": referral_id,
    }
    ref = {"referral_id": referral_id}
    return [
        (route.requester, "create", create),
        (route.target_doctor, "receive", ref),
        (route.target_doctor, "accept", dict(ref)),
    ]


def referral_id(run_tag: str, client: int, i: int) -> str:
    # Referral ids may hold letters, digits and "-_.:" (a step round's label has "#").
    return f"{run_tag.replace('#', '.')}-c{client}-{i}"


class Chains:
    """Releases a chain's next transaction when its predecessor commits VALID.

    Transaction indices of a client with `n` chains: creates 0..n-1 (scheduled), receives
    n..2n-1, accepts 2n..3n-1. `on_finish` runs on whatever thread finished a transaction
    (block listener, gRPC callbacks), under the tracker's lock; the sender takes what is
    ready with `take`."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._ready: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()
        self._sent_parents = 0
        self._finished_parents = 0

    def next_of(self, index: int) -> int | None:
        return index + self.n if index < 2 * self.n else None

    def on_sent(self, indices: Any) -> None:
        parents = sum(1 for i in indices if i < 2 * self.n)
        if parents:
            with self._lock:
                self._sent_parents += parents

    def on_finish(self, index: int, code: int) -> None:
        nxt = self.next_of(index)
        if nxt is None:
            return
        with self._lock:
            self._finished_parents += 1
            if code == 0:
                self._ready.append(nxt)

    def take(self, limit: int) -> list[int]:
        out: list[int] = []
        with self._lock:
            while self._ready and len(out) < limit:
                out.append(self._ready.popleft())
        return out

    def open(self) -> bool:
        """Something is ready, or a sent create/receive may still release its successor."""
        with self._lock:
            return bool(self._ready) or self._sent_parents > self._finished_parents

    def step_of(self, index: int) -> int:
        return index // self.n

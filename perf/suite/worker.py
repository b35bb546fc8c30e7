"""One client process: it receives a round's plan from the runner, signs every call
before the timed window, subscribes to commits, waits for the common start time, sends on
schedule, drains, and sends back per-transaction times.

Protocol over a multiprocessing pipe (runner -> client / client -> runner):
    ("plan", Plan)  ->  ("ready", count) | ("error", message)
    ("go", t0)      ->  ("done", ClientResult) | ("error", message)
    ("stop",)
"""

from __future__ import annotations

import array
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from node.sdk.client import Client, Identity
from perf.suite.config import MAX_TTL_MS, SIGNING_ALLOWANCE_S, Round
from perf.suite.listener import BlockListener
from perf.suite.referral import Chains, Setup
from perf.suite.schedule import client_schedule
from perf.suite.sender import Sender
from perf.suite.tracker import LATE, PARENT_FAILED, UNSENT, Tracker
from perf.suite.workloads import calls


@dataclass(frozen=True)
class Plan:
    round: Round
    client: int
    api: str  # the node this client submits to
    identity: Path
    run_tag: str  # unique per round, so that keys and tx ids never repeat
    setup: Setup | None = None  # the referral workload's routes (perf/suite/referral.py)


@dataclass(frozen=True)
class ClientResult:
    client: int
    api: str
    send_t: bytes  # array('d')
    done_t: bytes  # array('d')
    code: bytes  # array('i'): 0 committed/answered, > 0 a TxCode, < 0 see tracker.py
    kind: bytes  # array('b'): workloads.SUBMIT or QUERY
    sign_s: float  # time spent signing before the window
    listener_error: str
    step: bytes = b""  # array('b'): referral step (0 create, 1 receive, 2 accept); else empty
    chain_s: bytes = b""  # array('d'): referral chains, create sent -> accept committed


class Prepared:
    def __init__(self, plan: Plan, client: Client) -> None:
        self.plan = plan
        rnd = plan.round
        self.schedule = client_schedule(rnd, plan.client)
        identity = Identity.load(plan.identity)
        signers = {"": identity}
        count = len(self.schedule.offsets)
        todo = calls(rnd, plan.run_tag, plan.client, count, plan.setup)
        for name in {c.signer for c in todo} - set(signers):
            signers[name] = Identity.load(plan.identity.parent / name)
        # A referral chain's later steps go out up to 2 drains after the window.
        ttl_ms = min(
            MAX_TTL_MS, int((rnd.duration_s + 2 * rnd.drain_s + SIGNING_ALLOWANCE_S) * 1000)
        )
        started = time.perf_counter()
        self.raws = [
            client.build(signers[c.signer], c.contract, c.function, c.args, ttl_ms) for c in todo
        ]
        self.sign_s = time.perf_counter() - started
        self.kinds = [c.kind for c in todo]
        self.tracker = Tracker(len(self.raws))
        self.chains = Chains(count) if rnd.workload == "referral" else None
        if self.chains is not None:
            self.tracker.on_finish = self.chains.on_finish
        index_of = {raw: i for i, raw in enumerate(self.raws)}
        height = client.status().height
        self.listener = BlockListener(client.stub, height + 1, index_of, self.tracker)

    def run(self, client: Client, t0: float) -> ClientResult:
        rnd = self.plan.round
        sender = Sender(
            client.stub,
            self.raws,
            self.kinds,
            self.schedule,
            self.tracker,
            rnd.batch_max,
            rnd.tick_ms / 1000,
            self.chains,
            rnd.drain_s,
        )
        pause = t0 - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            sender.run(rnd.submit, t0)
            self.tracker.wait_all(time.monotonic() + rnd.drain_s)
        finally:
            self.listener.stop()
        self.tracker.expire(time.monotonic())
        step, chain_s = self._chain_results()
        return ClientResult(
            client=self.plan.client,
            api=self.plan.api,
            send_t=self.tracker.send_t.tobytes(),
            done_t=self.tracker.done_t.tobytes(),
            code=self.tracker.code.tobytes(),
            kind=array.array("b", self.kinds).tobytes(),
            sign_s=self.sign_s,
            listener_error=self.listener.error,
            step=step,
            chain_s=chain_s,
        )

    def _chain_results(self) -> tuple[bytes, bytes]:
        """Referral chains: dependents never sent count as failed, PARENT_FAILED when their
        predecessor failed, LATE when it committed after the sender's last call; and each
        chain's time from its create's send to its accept's commit."""
        chains = self.chains
        if chains is None:
            return b"", b""
        n, code, tracker = chains.n, self.tracker.code, self.tracker
        chain_s = array.array("d")
        for i in range(n):
            if code[i] == UNSENT:
                continue
            for parent, j in ((i, i + n), (i + n, i + 2 * n)):
                if code[j] == UNSENT:
                    code[j] = LATE if code[parent] == 0 else PARENT_FAILED
            if code[i + 2 * n] == 0:
                chain_s.append(tracker.done_t[i + 2 * n] - tracker.send_t[i])
        step = array.array("b", (i // n for i in range(3 * n)))
        return step.tobytes(), chain_s.tobytes()


def main(conn: Connection) -> None:
    """Entry point of a client process (multiprocessing, spawn)."""
    clients: dict[str, Client] = {}
    prepared: Prepared | None = None
    try:
        while True:
            message = conn.recv()
            try:
                if message[0] == "stop":
                    return
                if message[0] == "plan":
                    plan: Plan = message[1]
                    if plan.api not in clients:
                        clients[plan.api] = Client(plan.api, timeout_s=30)
                    prepared = Prepared(plan, clients[plan.api])
                    conn.send(("ready", len(prepared.raws)))
                elif message[0] == "go":
                    assert prepared is not None, "go before plan"
                    result = prepared.run(clients[prepared.plan.api], float(message[1]))
                    prepared = None
                    conn.send(("done", result))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        for client in clients.values():
            client.close()

"""One round on a running consortium: plans for the clients, the timed window, the
count on every consenter, and the row of numbers."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.sdk.client import Client, Identity
from node.tx import tx_id_of
from perf.suite import referral
from perf.suite.clients import ClientPool
from perf.suite.config import Round
from perf.suite.consortium import Consortium
from perf.suite.monitor import Monitor, ledger_bytes
from perf.suite.schedule import client_schedule
from perf.suite.stats import round_row
from perf.suite.worker import Plan
from perf.suite.workloads import preload_key

COMMITTED = 2  # medledger.v1.TxStatus.COMMITTED
SIGN_S_PER_TX = 100e-6  # a generous bound on signing, for the ready timeout


@dataclass
class RunContext:
    consortium: Consortium
    monitor: Monitor
    pool: ClientPool
    origin: float  # time.monotonic() when the run started (chart's zero)
    profile_round: str = ""  # py-spy records every node during this round
    profile_dir: Path | None = None
    profile_gil: bool = False  # py-spy --gil: only the thread holding the GIL
    preloaded: set[str] = field(default_factory=set)
    referral_setup: referral.Setup | None = None


def preload(ctx: RunContext, rnd: Round) -> None:
    """Keys for the query mix, written and committed before the timed window (so that
    none of their commits falls in the round's blocks)."""
    node = ctx.consortium.nodes[0]
    identity = Identity.load(ctx.consortium.identity(node, 0))
    with Client(node.api, timeout_s=60) as client:
        raws = [
            client.build(identity, "kv", "put", {"key": preload_key(i), "value": i})
            for i in range(rnd.preload_keys)
        ]
        chunks = [raws[start : start + 500] for start in range(0, len(raws), 500)]
        for chunk in chunks:
            client.submit_batch(chunk)
        deadline = time.monotonic() + 60
        for chunk in chunks:
            tx_id = tx_id_of(chunk[-1])
            while client.transaction(tx_id).status != COMMITTED:
                if time.monotonic() > deadline:
                    raise RuntimeError("the query mix's preloaded keys did not commit in 60 s")
                time.sleep(0.05)


def _profilers(ctx: RunContext, rnd: Round) -> list[subprocess.Popen[bytes]]:
    """py-spy on every node of the consortium during the profiled round, one file each
    (`profile-<round>-<node>.txt`)."""
    if rnd.label != ctx.profile_round or ctx.profile_dir is None:
        return []
    ctx.profile_dir.mkdir(parents=True, exist_ok=True)
    venv_spy = Path(sys.executable).parent / "py-spy"
    spy = str(venv_spy) if venv_spy.exists() else "py-spy"
    spies = []
    for node in ctx.consortium.nodes:
        stem = ctx.profile_dir / f"profile-{rnd.label.replace('#', '-')}-{node.name}"
        # --nonblocking: sample without pausing the node, so latency is not distorted.
        with open(f"{stem}.log", "wb") as log:
            spies.append(subprocess.Popen(
                [
                    spy, "record", "--pid", str(node.pid), "--format", "raw", "--rate", "100",
                    "--duration", str(int(rnd.duration_s)), "--output", f"{stem}.txt",
                    "--subprocesses", "--threads", "--nonblocking",
                    *(["--gil"] if ctx.profile_gil else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            ))  # fmt: skip
    return spies


def round_marks(tag: str) -> tuple[bytes, ...]:
    """What every transaction of the round carries in its args: the kv keys and the
    referral ids begin with the round's tag (workloads.py, referral.referral_id)."""
    return (f"{tag}-c".encode(), referral.referral_id(tag, 0, 0).removesuffix("0-0").encode())


def run_round(ctx: RunContext, rnd: Round) -> dict[str, Any]:
    consortium = ctx.consortium
    if rnd.workload == "query" and "query" not in ctx.preloaded:
        preload(ctx, rnd)
        ctx.preloaded.add("query")
    if rnd.workload == "referral" and ctx.referral_setup is None:
        # Enrollment and consent grants, before the round's first height is read.
        ctx.referral_setup = referral.setup(consortium.root, consortium.nodes[0].api)
        print(
            f"   referral setup: {ctx.referral_setup.setup_txs} txs in "
            f"{ctx.referral_setup.setup_s:.1f} s, {len(ctx.referral_setup.routes)} routes",
            flush=True,
        )
    tag = f"{rnd.label}-{uuid.uuid4().hex[:8]}"
    nodes = consortium.nodes
    setup = ctx.referral_setup if rnd.workload == "referral" else None
    plans = [
        Plan(
            rnd,
            i,
            nodes[i % len(nodes)].api,
            consortium.identity(nodes[i % len(nodes)], i),
            tag,
            setup,
        )
        for i in range(rnd.clients)
    ]
    before = consortium.heights()
    bytes_before = {n.name: ledger_bytes(n.data_dir) for n in nodes}
    count = sum(len(client_schedule(rnd, i).offsets) for i in range(rnd.clients))
    if rnd.workload == "referral":
        count *= len(referral.STEPS)
    ctx.pool.prepare(plans, timeout_s=60 + count * SIGN_S_PER_TX * 2)
    consortium.remember_pids()
    t0 = time.monotonic() + 0.5
    stalls_before = consortium.stalls()
    start_sample = ctx.monitor.sample()
    profilers = _profilers(ctx, rnd)
    try:
        results = ctx.pool.go(t0, timeout_s=rnd.duration_s + 2 * rnd.drain_s + 60)
        end_sample = ctx.monitor.sample()
        for spy in profilers:
            spy.wait(timeout=30)
    finally:
        for spy in profilers:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
    after = consortium.heights()
    top = max(after.values())
    committed: dict[str, int] = {}
    for node in nodes:
        if node.consenter:
            reached = consortium.wait_height(node, top, timeout_s=rnd.drain_s)
            committed[node.name] = consortium.count_valid(
                node, before[node.name], reached, round_marks(tag)
            )
    bytes_after = {n.name: ledger_bytes(n.data_dir) for n in nodes}
    samples = ctx.monitor.between(start_sample.t, end_sample.t)
    row = round_row(
        rnd,
        results,
        committed,
        samples,
        {k: bytes_after[k] - bytes_before[k] for k in bytes_after},
        ctx.origin,
    )
    row["window"] = [round(t0 - ctx.origin, 2), round(end_sample.t - ctx.origin, 2)]
    row["heights"] = {n: [before[n], after[n]] for n in after}
    row["roles"] = consortium.roles()
    stalls_after = consortium.stalls()
    for kind, after_kind in stalls_after.items():
        row[kind] = stall_delta(stalls_before[kind], after_kind)
    return row


def stall_delta(
    before: dict[str, dict[str, dict[str, float]]], after: dict[str, dict[str, dict[str, float]]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per node and source (store, generation), the round's stalls (synced writes,
    collections): count, mean and over-100-ms count."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for node, sources in after.items():
        for source, end in sources.items():
            start = before.get(node, {}).get(source, {})
            count = end["count"] - start.get("count", 0.0)
            seconds = end["seconds"] - start.get("seconds", 0.0)
            out.setdefault(node, {})[source] = {
                "count": int(count),
                "mean_ms": round(1000 * seconds / count, 3) if count else 0.0,
                "over_100ms": int(end["over_100ms"] - start.get("over_100ms", 0.0)),
            }
    return out

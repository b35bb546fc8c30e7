"""One node's CPU per transaction, stage by stage, in one process without a network
(issue 9): admission (`NodeCore.submit`: parse, checks, signature, mempool) and block
execution (`NodeCore.apply_entry`: checks again at block time, the contract sandbox,
results, Merkle roots, the synced LevelDB write, waiters), on a fresh one-node
consortium with the real sandbox.

    python perf/pipeline_bench.py [--txs 6000] [--block 50] [--rounds 3] [--profile F]

Prints JSON: µs of CPU (process time, this process only) per transaction for each stage,
the median of `--rounds`, and the sandbox process's CPU per transaction, against the
baseline of the same run: one bare signature verification of the same transactions
(the floor every node pays per transaction, issue 9). `--save` writes
perf/results/pipeline.json with the machine and the command. `--profile F`
writes a cProfile of the last round's stages to F (read it with `python -m pstats F`).
The suite (`perf/suite`) measures the whole consortium; this isolates what a node does
per transaction from what the network and gRPC add.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--txs", type=int, default=6000)
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()

    from node.execution.sandbox import Zygote

    zygote = Zygote.start()  # before any thread, as `medledger node start` does
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(Path(tmp), zygote, args)
    finally:
        zygote.close()
    result["machine"] = {"cores": os.cpu_count(), "python": platform.python_version()}
    result["command"] = "python perf/pipeline_bench.py " + " ".join(sys.argv[1:])
    text = json.dumps(result, indent=2)
    print(text)
    if args.save:
        (ROOT / "perf" / "results" / "pipeline.json").write_text(text + "\n")
    return 0


def run(tmp: Path, zygote: object, args: argparse.Namespace) -> dict[str, object]:
    import psutil
    from medledger.v1 import ledger_pb2

    from node import config as config_mod
    from node.clock import now_ms
    from node.daemon import open_node
    from node.localnet import free_base_port
    from node.provisioning import Plan, init_consortium
    from node.sdk.client import Identity
    from node.tx import build

    root = tmp / "net"
    init_consortium(Plan(root, 1, 1, False, base_port=free_base_port()))
    cfg = config_mod.load(root / "nodes" / "hosp1" / "config.toml")
    services = open_node(cfg, zygote)  # type: ignore[arg-type]
    core, genesis = services.core, services.genesis
    doctor = Identity.load(root / "identities" / "hosp1-doctor1")
    profiler = cProfile.Profile() if args.profile else None
    verify_us: list[float] = []
    admit_us: list[float] = []
    execute_us: list[float] = []
    sandbox_us: list[float] = []
    index = 1
    try:
        sandboxes = [psutil.Process(e.worker_pid) for e in services.engines if e.worker_pid]
        for r in range(args.rounds):
            now = now_ms()
            txs = [
                build(
                    chain_id=genesis.chain_id,
                    contract="kv",
                    function="put",
                    args={"key": f"r{r}-k{i}", "value": i},
                    key=doctor.key,
                    certificate_der=doctor.certificate_der,
                    now_ms=now,
                )
                for i in range(args.txs)
            ]
            last = r == args.rounds - 1
            verify_us.append(_verify_floor(txs))
            if profiler is not None and last:
                profiler.enable()
            t0 = time.process_time()
            for raw in txs:
                core.submit(raw, now_ms(), local=True)
            t1 = time.process_time()
            sandbox_before = sum(sum(p.cpu_times()[:2]) for p in sandboxes)
            done = 0
            while done < len(txs):
                batch = core.take_batch(now_ms(), args.block, 8 << 20)
                if not batch:
                    raise RuntimeError("the mempool gave back fewer transactions than admitted")
                entry = ledger_pb2.Batch(
                    txs=[tx.raw for tx in batch], leader_time_ms=now_ms(), proposer="hosp1"
                )
                index += 1
                core.apply_entry(entry, 1, index, now_ms())
                done += len(batch)
            t2 = time.process_time()
            sandbox_after = sum(sum(p.cpu_times()[:2]) for p in sandboxes)
            if profiler is not None and last:
                profiler.disable()
            admit_us.append((t1 - t0) / len(txs) * 1e6)
            execute_us.append((t2 - t1) / len(txs) * 1e6)
            sandbox_us.append((sandbox_after - sandbox_before) / len(txs) * 1e6)
    finally:
        for engine in services.engines:
            engine.close()
        services.store.close()
    if profiler is not None:
        profiler.dump_stats(args.profile)
    return {
        "benchmark": "pipeline",
        "txs_per_round": args.txs,
        "block_txs": args.block,
        "rounds": args.rounds,
        "verify_us_per_tx": round(statistics.median(verify_us), 1),
        "admit_us_per_tx": round(statistics.median(admit_us), 1),
        "execute_us_per_tx": round(statistics.median(execute_us), 1),
        "sandbox_process_us_per_tx": round(statistics.median(sandbox_us), 1),
        "admit_over_verify": round(statistics.median(admit_us) / statistics.median(verify_us), 2),
        "per_round": {
            "verify": verify_us,
            "admit": admit_us,
            "execute": execute_us,
            "sandbox": sandbox_us,
        },
    }


def _verify_floor(txs: list[bytes]) -> float:
    """CPU µs per transaction of verifying each signature once, nothing else."""
    from cryptography import x509
    from medledger.v1 import ledger_pb2

    from node.crypto import keys

    signed = [ledger_pb2.SignedTx.FromString(raw) for raw in txs]
    bodies = [ledger_pb2.TxBody.FromString(tx.body) for tx in signed]
    public = x509.load_der_x509_certificate(bodies[0].creator.certificate).public_key()
    t0 = time.process_time()
    for tx in signed:
        if not keys.verify(public, tx.signature, tx.body):  # type: ignore[arg-type]
            raise RuntimeError("a benchmark transaction does not verify")
    return (time.process_time() - t0) / len(txs) * 1e6


if __name__ == "__main__":
    raise SystemExit(main())

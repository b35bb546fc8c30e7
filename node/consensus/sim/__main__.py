"""Command line of the deterministic Raft simulator.

    python -m node.consensus.sim --seeds 300 [--seed 1] [--nodes 3|5|7]
                                 [--mutation NAME] [--json] [--jobs J] [--stop-on-failure]

Runs seeds S, S+1, ..., S+N-1 (each fully determined by its number), prints a summary
(JSON with --json) and, for every failed seed, the command that replays it. Exits 1 if
any seed failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from node.consensus.config import Mutation
from node.consensus.sim.run import LIVENESS_TICKS, SeedResult, run_seed


def _run(args: tuple[int, int, str | None]) -> SeedResult:
    return run_seed(*args)


def run_seeds(
    first: int, count: int, nodes: int, mutation: str | None, jobs: int, stop_on_failure: bool
) -> Iterator[SeedResult]:
    work = [(s, nodes, mutation) for s in range(first, first + count)]
    if jobs <= 1:
        for item in work:
            res = _run(item)
            yield res
            if stop_on_failure and res.failure:
                return
        return
    # fork: the children inherit the imported modules, so start-up is cheap.
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) as pool:
        chunk = max(1, min(50, count // (jobs * 8)))
        for res in pool.imap(_run, work, chunksize=chunk):
            yield res
            if stop_on_failure and res.failure:
                pool.terminate()
                return


def summarize(results: list[SeedResult], elapsed: float) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    network: Counter[str] = Counter()
    for r in results:
        faults.update(r.faults)
        network.update(r.network)
    failed = [r for r in results if r.failure]
    return {
        "seeds": len(results),
        "steps": sum(r.steps for r in results),
        "commits": sum(r.commits for r in results),
        "leader_changes": sum(r.leader_changes for r in results),
        "faults": dict(sorted(faults.items())),
        "faults_total": sum(faults.values()),
        "snapshots": sum(r.snapshots for r in results),
        "compactions": sum(r.compactions for r in results),
        "membership_changes": sum(r.membership_changes for r in results),
        "transfers": sum(r.transfers for r in results),
        "messages": sum(r.messages for r in results),
        "network": dict(sorted(network.items())),  # messages cut, dropped, duplicated
        "reads": sum(r.reads for r in results),
        "reads_served": sum(r.reads_served for r in results),
        "background_writes": sum(r.background_writes for r in results),
        "liveness_bound_ticks": LIVENESS_TICKS,
        "max_recovery_ticks": max((r.max_recovery_ticks for r in results), default=0),
        "min_commits_per_seed": min((r.commits for r in results), default=0),
        "min_faults_per_seed": min((sum(r.faults.values()) for r in results), default=0),
        "violations": sum(len(r.violations) for r in results),
        "failed_seeds": [
            {
                "seed": r.seed,
                "reason": r.failure,
                "violations": r.violations[:5],
                "replay": r.replay_command(),
            }
            for r in failed
        ],
        "elapsed_s": round(elapsed, 3),
        "seeds_per_s": round(len(results) / elapsed, 1) if elapsed > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m node.consensus.sim", description=__doc__)
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    p.add_argument("--seed", type=int, default=1, help="first seed")
    p.add_argument("--nodes", type=int, choices=(3, 5, 7), default=3)
    p.add_argument("--mutation", choices=[m.value for m in Mutation], default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--stop-on-failure", action="store_true")
    a = p.parse_args(argv)
    start = time.perf_counter()
    results = list(run_seeds(a.seed, a.seeds, a.nodes, a.mutation, a.jobs, a.stop_on_failure))
    summary = summarize(results, time.perf_counter() - start)
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            if key != "failed_seeds":
                print(f"{key}: {value}")
        for f in summary["failed_seeds"]:
            print(f"FAILED seed {f['seed']}: {f['reason']}")
            for v in f["violations"]:
                print(f"  {v}")
            print(f"  replay: {f['replay']}")
    return 1 if summary["failed_seeds"] else 0


if __name__ == "__main__":
    sys.exit(main())

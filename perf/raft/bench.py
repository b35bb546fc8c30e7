"""Raft-only benchmark: MedLedger's Raft against PySyncObj 0.3.17, in one run (issue 3).

    python perf/raft/bench.py [--seconds 20] [--warmup 5] [--concurrency 64] [--save]
        [--systems medledger,pysyncobj,pysyncobj-tuned] [--rounds 1] [--save-as raft-x.json]

For each system: three member processes on free 127.0.0.1 ports, a load generator in a
fourth process that warms up and then keeps `--concurrency` 300-byte commands in flight
at the leader for `--seconds`; the members are then stopped. Prints JSON (committed
ops/s, p50/p99/max commit latency, CPU seconds per op per member, durability) and with
--save writes perf/results/raft.json with the machine, command and time. Every process
it starts is stopped at the end, whatever happens.

Systems: medledger (durable: the nodes' Raft write-ahead log, wal_storage.py, synced as
Raft asks; the leader sends before its own save, thesis §10.2.1), medledger-leveldb and
medledger-lazy-leveldb (the Raft log in LevelDB, as earlier builds), pysyncobj (SyncObjConf
defaults: in-memory log, no fsync), pysyncobj-tuned (the same with the low-latency
settings in PYSYNCOBJ_TUNED), pysyncobj-journal (tuned, with PySyncObj's persistent
journal file, which it never fsyncs), and diagnostics medledger-sync (persist before sending
everywhere, as before), medledger-every, medledger-settled and medledger-lazy (the three
RaftConfig.commit_notice modes; medledger runs the default, EVERY, as the node does),
medledger-writer (the leader's saves in one writer thread, Readys pipelined),
medledger-nofsync, medledger-thread (fsync in a worker thread, persist first),
medledger-gc (gc.freeze and a higher GC threshold), medledger-gc-default (Python's collector
settings, as members ran before session 8), medledger-early (acknowledges entries
already stored before this Ready's fsync) and medledger-bigbuf (LevelDB, 64 MiB buffer). The
goal is judged against the faster PySyncObj configuration of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "perf" / "results"
HOST = "127.0.0.1"
SYSTEMS = (
    "medledger",
    "medledger-writer",
    "medledger-sync",
    "medledger-lazy",
    "medledger-every",
    "medledger-settled",
    "medledger-lazy-writer",
    "medledger-nofsync",
    "medledger-thread",
    "medledger-gc",
    "medledger-gc-default",
    "medledger-early",
    "medledger-bigbuf",
    "medledger-lazy-bigbuf",
    "medledger-leveldb",
    "medledger-lazy-leveldb",
    "medledger-lazy-bigseg",
    "medledger-nocompact",
    "pysyncobj",
    "pysyncobj-tuned",
    "pysyncobj-journal",
)
DURABLE = {s: s.startswith("medledger") and s != "medledger-nofsync" for s in SYSTEMS}
# PySyncObj's defaults send batched append entries only every appendEntriesPeriod (0.1 s)
# and let its Raft thread sleep up to autoTickPeriod (0.05 s) in poll() while client
# commands wait in its queue: ~100 ms per commit, so a closed loop of 64 clients gets
# ~600 ops/s. These settings were the fastest we found for a closed loop (see README).
PYSYNCOBJ_TUNED = ["autoTickPeriod=0.001", "appendEntriesPeriod=0.002"]


def free_ports(n: int) -> list[int]:
    """Ports the kernel hands out now; all held open together so that they differ."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def member_commands(
    system: str, workdir: Path, tick_ms: float, syncobj_conf: list[str], profile_dir: Path | None
) -> tuple[list[list[str]], list[int]]:
    ports = free_ports(6)
    raft_ports, client_ports = ports[:3], ports[3:]
    py = sys.executable
    commands = []
    if system.startswith("pysyncobj"):
        if system in ("pysyncobj-tuned", "pysyncobj-journal"):
            syncobj_conf = PYSYNCOBJ_TUNED + syncobj_conf
        for i in range(3):
            partners = ",".join(str(p) for j, p in enumerate(raft_ports) if j != i)
            member_conf = list(syncobj_conf)
            if system == "pysyncobj-journal":
                journal = workdir / f"syncobj-{i}.journal"
                member_conf.append(f"journalFile={json.dumps(str(journal))}")
            commands.append(
                [py, "-m", "perf.raft.syncobj_member", "--self", str(raft_ports[i])]
                + ["--partners", partners, "--client-port", str(client_ports[i])]
                + [arg for item in member_conf for arg in ("--conf", item)]
            )
        return commands, client_ports
    ids = [f"n{i + 1}" for i in range(3)]
    raft = ",".join(f"{n}={p}" for n, p in zip(ids, raft_ports, strict=True))
    extra = {
        "medledger-writer": ["--async-save", "writer"],
        "medledger-sync": ["--async-save", "off"],
        "medledger-lazy": ["--commit-notice", "lazy"],
        "medledger-every": ["--commit-notice", "every"],
        "medledger-settled": ["--commit-notice", "settled"],
        "medledger-lazy-writer": ["--commit-notice", "lazy", "--async-save", "writer"],
        "medledger-nofsync": ["--no-fsync"],
        "medledger-thread": ["--save-in-thread", "--async-save", "off"],
        "medledger-gc": ["--gc-threshold", "100000"],
        "medledger-gc-default": ["--gc-defaults"],
        "medledger-early": ["--apply-early"],
        "medledger-bigbuf": ["--storage", "leveldb", "--write-buffer-mb", "64"],
        "medledger-lazy-bigbuf": [
            "--storage",
            "leveldb",
            "--commit-notice",
            "lazy",
            "--write-buffer-mb",
            "64",
        ],
        "medledger-leveldb": ["--storage", "leveldb"],
        "medledger-lazy-bigseg": ["--commit-notice", "lazy", "--segment-mb", "1024"],
        "medledger-nocompact": ["--compact-every", "100000000"],
        "medledger-lazy-leveldb": ["--storage", "leveldb", "--commit-notice", "lazy"],
    }
    for i, node_id in enumerate(ids):
        commands.append(
            [py, "-m", "perf.raft.member", "--id", node_id, "--raft", raft]
            + ["--client-port", str(client_ports[i]), "--data", str(workdir / node_id)]
            + ["--tick-ms", str(tick_ms)]
            + extra.get(system, [])
            + (["--profile", str(profile_dir / f"{system}-{node_id}.prof")] if profile_dir else [])
        )
    return commands, client_ports


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_system(system: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"raftbench-{system}-") as tmp:
        workdir = Path(tmp)
        commands, client_ports = member_commands(
            system, workdir, args.tick_ms, args.syncobj_conf, args.profile_dir
        )
        procs: list[subprocess.Popen[bytes]] = []
        logs = []
        try:
            for i, command in enumerate(commands):
                out = open(workdir / f"member{i}.out", "wb")  # noqa: SIM115
                logs.append(out)
                procs.append(subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out))
            loadgen = [sys.executable, "-m", "perf.raft.loadgen"]
            loadgen += ["--ports", ",".join(map(str, client_ports))]
            loadgen += ["--pids", ",".join(str(p.pid) for p in procs)]
            loadgen += ["--concurrency", str(args.concurrency)]
            loadgen += ["--connections", str(args.connections)]
            loadgen += ["--warmup", str(args.warmup), "--seconds", str(args.seconds)]
            gen = subprocess.Popen(
                loadgen, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            procs.append(gen)  # type: ignore[arg-type]
            deadline = time.monotonic() + args.warmup + args.seconds + 90
            while gen.poll() is None:
                for p, command in zip(procs, commands, strict=False):
                    if p.poll() is not None:
                        raise RuntimeError(f"member exited early ({p.returncode}): {command}")
                if time.monotonic() > deadline:
                    raise RuntimeError("load generator timed out")
                time.sleep(0.2)
            stdout, stderr = gen.communicate()
            if gen.returncode != 0:
                raise RuntimeError(f"load generator failed: {stderr[-2000:]}")
            result: dict[str, Any] = json.loads(stdout)
        except BaseException:
            for i in range(len(commands)):
                text = (workdir / f"member{i}.out").read_text(errors="replace")
                print(f"--- {system} member {i} output ---\n{text[-3000:]}", file=sys.stderr)
            raise
        finally:
            stop(procs)
            for out in logs:
                out.close()
        members = []
        for i in range(len(commands)):
            lines = (workdir / f"member{i}.out").read_text(errors="replace").splitlines()
            with contextlib.suppress(IndexError, ValueError):
                members.append(json.loads(lines[-1]))
        result["durable_fsync"] = DURABLE[system]
        result["load_avg_1m_after"] = os.getloadavg()[0]
        result["members"] = members
        return result


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (the machine is shared and noisy; one round can be an outlier)."""
    return {
        "rounds": len(runs),
        "ops_per_s": statistics.median(r["ops_per_s"] for r in runs),
        "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in runs),
        "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs),
        "max_ms": max(r["latency_ms"]["max"] for r in runs),
        "cpu_us_per_op_total": statistics.median(r["cpu_us_per_op_total"] for r in runs),
        "durable_fsync": runs[0]["durable_fsync"],
    }


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    medians = {system: aggregate(runs) for system, runs in results.items() if runs}
    summary: dict[str, Any] = {"medians": medians}
    ours = medians.get("medledger")
    peers = [s for s in medians if s.startswith("pysyncobj")]
    if ours is None or not peers:
        return summary
    # The goal is judged against the strongest PySyncObj configuration in this run.
    best = max(peers, key=lambda s: medians[s]["ops_per_s"])
    theirs = medians[best]
    ops_ratio = ours["ops_per_s"] / theirs["ops_per_s"]
    summary.update(
        {
            "compared_with": best,
            "ops_ratio_medledger_over_pysyncobj": round(ops_ratio, 3),
            "p99_ratio_medledger_over_pysyncobj": round(ours["p99_ms"] / theirs["p99_ms"], 3),
            "goal_met": ops_ratio >= 1.0 and ours["p99_ms"] <= theirs["p99_ms"],
            "goal": "medledger ops/s >= PySyncObj ops/s at p99 <= PySyncObj p99, durably",
        }
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--tick-ms", type=float, default=50.0, help="MedLedger Raft tick")
    parser.add_argument(
        "--syncobj-conf",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a SyncObjConf setting for PySyncObj, e.g. appendEntriesUseBatch=false",
    )
    parser.add_argument(
        "--profile-dir", type=Path, help="cProfile the MedLedger members into this directory"
    )
    parser.add_argument("--systems", default="medledger,pysyncobj,pysyncobj-tuned")
    parser.add_argument("--rounds", type=int, default=1, help="alternate systems this often")
    parser.add_argument("--save", action="store_true", help="write perf/results/raft.json")
    parser.add_argument("--save-as", help="with --save: another perf/results/raft*.json name")
    args = parser.parse_args()
    systems = args.systems.split(",")
    for system in systems:
        if system not in SYSTEMS:
            parser.error(f"unknown system {system!r}; choose from {', '.join(SYSTEMS)}")
    # SIGTERM to the driver unwinds through the `finally` that stops the members.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    load_before = os.getloadavg()[0]
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for _ in range(args.rounds):
        for system in systems:
            results[system].append(run_system(system, args))
    result = {
        "benchmark": "raft",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m_before": load_before,
        },
        "command": shlex.join(["python", "perf/raft/bench.py", *sys.argv[1:]]),
        "config": {
            "members": 3,
            "command_bytes": 300,
            "concurrency": args.concurrency,
            "connections": args.connections,
            "warmup_s": args.warmup,
            "seconds": args.seconds,
            "medledger": "RawNode + WalStorage (a spare segment made with the log, "
            "released segments reused, fdatasync when must_sync, saves on the event "
            "loop; commit_notice EVERY, as the node; the leader sends a Ready marked "
            "async_save before saving it and counts itself once saved), the node's "
            "garbage-collector settings (node/gctune.py), "
            f"trio TCP, tick {args.tick_ms} ms, election_tick 10, heartbeat_tick 1",
            "medledger-sync": "as medledger before issue 3's async save: persist, then send",
            "medledger-lazy": "as medledger, RaftConfig(commit_notice=LAZY)",
            "medledger-every": "as medledger, RaftConfig(commit_notice=EVERY)",
            "medledger-settled": "as medledger, RaftConfig(commit_notice=SETTLED)",
            "medledger-writer": "as medledger, leader saves in one writer thread (pipelined)",
            "medledger-lazy-writer": "medledger-lazy and medledger-writer together",
            "medledger-leveldb": "as medledger, the Raft log in LevelDB (plyvel, sync=True)",
            "medledger-lazy-leveldb": "medledger-lazy with the Raft log in LevelDB",
            "medledger-lazy-bigseg": "medledger-lazy with 1 GiB segments (no rotation in a run)",
            "medledger-nocompact": "diagnostic: as medledger, no log compaction during a run",
            "medledger-bigbuf": "as medledger-leveldb, write_buffer_size 64 MiB (default 4)",
            "medledger-lazy-bigbuf": "medledger-lazy and medledger-bigbuf together",
            "pysyncobj": "0.3.17, SyncObjConf() defaults, in-memory log, no fsync",
            "pysyncobj-tuned": f"as pysyncobj, with {', '.join(PYSYNCOBJ_TUNED)}",
            "pysyncobj-journal": (
                "as pysyncobj-tuned, with journalFile (PySyncObj's persistent log: an "
                "mmap'd file written on every entry, never msync'd or fsync'd while running)"
            ),
        },
        "results": results,
        "summary": summarise(results),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.save or args.save_as:
        RESULTS.mkdir(exist_ok=True)
        name = args.save_as or "raft.json"
        if not (name.startswith("raft") and name.endswith(".json") and "/" not in name):
            raise SystemExit(f"--save-as {name!r}: expected a name like raft-c512.json")
        (RESULTS / name).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

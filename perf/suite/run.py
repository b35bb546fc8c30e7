"""The suite's command:

    python -m perf.suite.run --config perf/suite/short.toml [--save] [--consenters 3]

Starts a consortium per group of rounds with the same shape (hospitals, consenters,
clients) in a temporary folder, runs the rounds, prints a Markdown table, and with --save
writes perf/results/suite-<name>-<time>.json|.md|.png. Every node and client process it
started is stopped before it returns, whatever happened.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from itertools import groupby
from pathlib import Path
from types import FrameType
from typing import Any

from perf.suite import chart, config, report
from perf.suite.clients import ClientPool
from perf.suite.consortium import Consortium, node_error
from perf.suite.monitor import Monitor, ledger_bytes
from perf.suite.rounds import RunContext, run_round
from perf.suite.workloads import WorkloadUnavailable, check_available

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m perf.suite.run", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, required=True, help="a suite file (TOML)")
    p.add_argument("--save", action="store_true", help="write the results to perf/results/")
    p.add_argument("--out", type=Path, help="results folder (default perf/results with --save)")
    p.add_argument("--consenters", type=int, help="override every round's consenters")
    p.add_argument("--hospitals", type=int, help="override every round's hospitals")
    p.add_argument("--clients", type=int, help="override every round's client processes")
    p.add_argument("--rate", type=float, help="override every fixed rate (tx/s), e.g. a soak")
    p.add_argument("--duration", type=float, help="override every round's duration_s")
    p.add_argument("--rounds", help="comma-separated round names to run (default all)")
    p.add_argument(
        "--leader", help="make this consenter (e.g. hosp1) the Raft leader before the rounds"
    )
    p.add_argument("--keep", type=Path, help="keep the network's data and logs in this folder")
    p.add_argument("--profile", default="", help="py-spy record every node in this round")
    p.add_argument(
        "--profile-gil", action="store_true", help="profile only the thread holding the GIL"
    )
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("consenters", "hospitals", "clients"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    if args.duration is not None:
        out["duration_s"] = args.duration
    if args.consenters is not None and args.hospitals is None:
        out["hospitals"] = max(args.consenters, 1)
    return out


def _rounds(suite: config.Suite, args: argparse.Namespace) -> list[config.Round]:
    rounds = suite.rounds
    if args.rounds:
        wanted = set(args.rounds.split(","))
        unknown = wanted - {r.name for r in rounds}
        if unknown:
            raise config.ConfigError(f"--rounds: no round named {sorted(unknown)}")
        rounds = [r for r in rounds if r.name in wanted]
    if args.rate is not None:
        rounds = [
            replace(r, rate=replace(r.rate, tps=args.rate)) if r.rate.controller == "fixed" else r
            for r in rounds
        ]
    return [step for r in rounds for step in config.expand_steps(r)]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _ledger_summary(consortium: Consortium, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole-run ledger size per committed transaction (per-round deltas are noisy:
    LevelDB compacts when it likes)."""
    out = []
    for node in consortium.nodes:
        txs = sum(r["committed_by_node"].get(node.name, 0) for r in rows)
        size = ledger_bytes(node.data_dir)
        out.append(
            {
                "node": node.name,
                "consenters": consortium.consenters,
                "data_dir_bytes": size,
                "committed_txs": txs,
                "bytes_per_tx": round(size / txs, 1) if txs else None,
            }
        )
    return out


def run_group(
    rounds: list[config.Round], args: argparse.Namespace, origin: float, sample_s: float
) -> tuple[list[dict[str, Any]], list[dict[str, float]], list[dict[str, Any]]]:
    first = rounds[0]
    base = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="medledger-perf-"))
    root = base / f"net-h{first.hospitals}-c{first.consenters}"
    consortium = Consortium(root, first.hospitals, first.consenters)
    pool: ClientPool | None = None
    monitor: Monitor | None = None
    rows: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    try:
        print(f"== starting {first.hospitals} node(s), {first.consenters} consenter(s) in {root}")
        try:
            consortium.start()
        except Exception as exc:
            raise SystemExit(f"the consortium did not start: {node_error(exc)}") from exc
        if args.leader:
            consortium.place_leader(args.leader)
            print(f"== leader: {args.leader}", flush=True)
        monitor = Monitor(consortium.nodes, sample_s)
        monitor.start()
        pool = ClientPool(first.clients)
        profile_dir = (args.out or RESULTS) if args.profile else None
        ctx = RunContext(
            consortium, monitor, pool, origin, args.profile, profile_dir, args.profile_gil
        )
        for rnd in rounds:
            print(f"-- {rnd.label}: {rnd.workload} {rnd.submit} {rnd.rate.controller} "
                  f"{rnd.target_tps():g}/s for {rnd.duration_s:g} s", flush=True)  # fmt: skip
            row = run_round(ctx, rnd)
            rows.append(row)
            print(
                f"   send {row['send_rate']}/s, throughput {row['throughput']}/s, "
                f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, ok {row['success']}, "
                f"fail {row['fail']} {row['fail_codes'] or ''}, CPU s/tx {row['cpu_s_per_tx']}",
                flush=True,
            )
            for key, what, prefix in report.STALL_LINES:
                if row.get(key):
                    print(f"   {what}: {report.stall_line(row[key], prefix)}", flush=True)
        ledger = _ledger_summary(consortium, rows)
    finally:
        if pool is not None:
            pool.close()
        rss = _rss_series(monitor, origin) if monitor is not None else []
        if monitor is not None:
            monitor.stop()
        stopped = consortium.stop()
        print(f"== stopped: {stopped}")
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return rows, rss, ledger


def _rss_series(monitor: Monitor, origin: float) -> list[dict[str, float]]:
    return [{"t": round(s.t - origin, 2), **s.rss_mb} for s in monitor.samples]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        suite = config.load(args.config, _overrides(args))
        rounds = _rounds(suite, args)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runnable, skipped = [], []
    for rnd in rounds:
        try:
            check_available(rnd)
            runnable.append(rnd)
        except WorkloadUnavailable as exc:
            skipped.append(f"{rnd.label}: {exc}")
            print(f"-- {rnd.label}: skipped: {exc}")
    load_at_start = round(os.getloadavg()[0], 2)  # before our own nodes and clients run
    origin = time.monotonic()
    rows: list[dict[str, Any]] = []
    rss: list[dict[str, float]] = []
    ledger: list[dict[str, Any]] = []
    shape = lambda r: (r.hospitals, r.consenters, r.clients)  # noqa: E731
    for _key, group in groupby(runnable, key=shape):
        group_rows, group_rss, group_ledger = run_group(list(group), args, origin, suite.sample_s)
        rows += group_rows
        rss += group_rss
        ledger += group_ledger
    command = "python -m perf.suite.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    doc = report.document(suite.name, command, rows, skipped)
    doc["ledger"] = ledger
    doc["machine"]["load_avg_1m_at_end"] = doc["machine"]["load_avg_1m_at_start"]
    doc["machine"]["load_avg_1m_at_start"] = load_at_start
    print()
    print(report.markdown(doc))
    out = args.out or (RESULTS if args.save else None)
    if out is not None:
        stem = f"suite-{suite.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        json_path, md_path = report.write(doc, out, stem)
        chart.draw(doc, rss, out / f"{stem}.png")
        print(f"wrote {json_path}, {md_path}, {out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

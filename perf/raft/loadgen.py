"""Closed-loop load generator for the Raft-only benchmark (one process, trio).

    python -m perf.raft.loadgen --ports 7101,7102,7103 --pids 11,12,13 \
        [--concurrency 64] [--connections 4] [--warmup 5] [--seconds 20]

Finds the leader (IS_LEADER on every client port), then keeps `--concurrency` commands
of 300 bytes outstanding at it: each acknowledgement records the latency from submit to
acknowledgement and submits the next command in the same slot. Only acknowledgements
received inside the measurement window count; the members' CPU time (from /proc) is
sampled at the window's edges. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field

import trio

from perf.raft.framing import FrameBuffer, Op, Status, parse_head, request

HOST = "127.0.0.1"
COMMAND_BYTES = 300
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SLOW_NS = 20_000_000  # 20 ms


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Run:
    measuring: bool = False
    stopping: bool = False
    committed: int = 0
    failed: int = 0
    outstanding: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    # (completed at, latency) of acknowledgements slower than SLOW_NS, to see whether
    # the tail comes in bursts (a member stalled) or evenly.
    slow: list[tuple[int, int]] = field(default_factory=list)


async def find_leader(ports: list[int], timeout_s: float) -> int:
    with trio.fail_after(timeout_s):
        while True:
            for port in ports:
                try:
                    stream = await trio.open_tcp_stream(HOST, port)
                except OSError:
                    continue
                async with stream:
                    await stream.send_all(request(Op.IS_LEADER, 0))
                    buf = FrameBuffer()
                    frames: list[bytes] = []
                    while not frames:
                        data = await stream.receive_some(64)
                        if not data:
                            break
                        frames = buf.feed(data)
                    if frames and parse_head(frames[0])[0] == Status.LEADER:
                        return port
            await trio.sleep(0.1)


async def drive(port: int, slots: range, run: Run, filler: bytes) -> None:
    """Keep one command per slot outstanding on one connection."""
    stream = await trio.open_tcp_stream(HOST, port)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent_at: dict[int, int] = {}
    next_id = slots.start << 32

    def submit(out: list[bytes]) -> None:
        nonlocal next_id
        next_id += 1
        sent_at[next_id] = time.perf_counter_ns()
        out.append(request(Op.PROPOSE, next_id, next_id.to_bytes(8, "big") + filler))

    async with stream:
        out: list[bytes] = []
        for _ in slots:
            submit(out)
        run.outstanding += len(slots)
        await stream.send_all(b"".join(out))
        buf = FrameBuffer()
        while sent_at:
            data = await stream.receive_some(1 << 18)
            if not data:
                raise ConnectionError(f"leader at port {port} closed the connection")
            now = time.perf_counter_ns()
            out = []
            for body in buf.feed(data):
                status, request_id, _ = parse_head(body)
                started = sent_at.pop(request_id)
                if status == Status.COMMITTED:
                    if run.measuring:
                        run.committed += 1
                        run.latencies_ns.append(now - started)
                        if now - started > SLOW_NS:
                            run.slow.append((now, now - started))
                elif run.measuring:
                    run.failed += 1
                if run.stopping:
                    run.outstanding -= 1
                else:
                    submit(out)
            if out:
                await stream.send_all(b"".join(out))


def percentile_ms(sorted_ns: list[int], q: float) -> float | None:
    if not sorted_ns:
        return None
    i = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return round(sorted_ns[i] / 1e6, 3)


async def measure(args: argparse.Namespace) -> dict[str, object]:
    ports = [int(p) for p in args.ports.split(",")]
    pids = [int(p) for p in args.pids.split(",")]
    leader = await find_leader(ports, args.leader_timeout)
    run = Run()
    filler = os.urandom(COMMAND_BYTES - 8)
    per_conn = -(-args.concurrency // args.connections)
    async with trio.open_nursery() as nursery:
        for start in range(0, args.concurrency, per_conn):
            slots = range(start, min(args.concurrency, start + per_conn))
            nursery.start_soon(drive, leader, slots, run, filler)
        await trio.sleep(args.warmup)
        cpu_start = [cpu_seconds(p) for p in pids]
        own_start = time.process_time()
        t_start = time.perf_counter()
        t_start_ns = time.perf_counter_ns()
        run.measuring = True
        await trio.sleep(args.seconds)
        run.measuring = False
        elapsed = time.perf_counter() - t_start
        cpu_end = [cpu_seconds(p) for p in pids]
        own_cpu = time.process_time() - own_start
        run.stopping = True
        with trio.move_on_after(10):
            while run.outstanding > 0:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    lat = sorted(run.latencies_ns)
    ops = run.committed
    cpu = [round(b - a, 3) for a, b in zip(cpu_start, cpu_end, strict=True)]
    return {
        "leader_client_port": leader,
        "window_s": round(elapsed, 3),
        "committed_ops": ops,
        "failed_ops": run.failed,
        "ops_per_s": round(ops / elapsed, 1),
        "latency_ms": {
            "p50": percentile_ms(lat, 0.50),
            "p99": percentile_ms(lat, 0.99),
            "max": round(lat[-1] / 1e6, 3) if lat else None,
            "mean": round(sum(lat) / len(lat) / 1e6, 3) if lat else None,
        },
        "cpu_s_per_member": dict(zip(args.pids.split(","), cpu, strict=True)),
        "cpu_us_per_op_per_member": [round(c / ops * 1e6, 1) if ops else None for c in cpu],
        "cpu_us_per_op_total": round(sum(cpu) / ops * 1e6, 1) if ops else None,
        "loadgen_cpu_s": round(own_cpu, 3),
        "slow_acks": _slow_summary(run.slow, t_start_ns),
    }


def _slow_summary(slow: list[tuple[int, int]], t_start_ns: int) -> dict[str, object]:
    """Acknowledgements slower than SLOW_NS, by 100 ms of the window they completed in."""
    buckets: dict[float, list[int]] = {}
    for done, latency in slow:
        key = round((done - t_start_ns) // 100_000_000 / 10, 1)
        buckets.setdefault(key, []).append(latency)
    return {
        "threshold_ms": SLOW_NS / 1e6,
        "count": len(slow),
        "windows": len(buckets),
        "worst": [
            {"at_s": at, "n": len(lats), "max_ms": round(max(lats) / 1e6, 1)}
            for at, lats in sorted(buckets.items(), key=lambda kv: -max(kv[1]))[:8]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", required=True, help="client ports of the members")
    parser.add_argument("--pids", required=True, help="member process ids (CPU sampling)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--leader-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(json.dumps(trio.run(measure, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

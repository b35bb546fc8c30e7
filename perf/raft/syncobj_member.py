"""One member of a 3-member PySyncObj 0.3.17 group, the benchmark's comparison peer.

    python -m perf.raft.syncobj_member --self 7001 --partners 7002,7003 --client-port 7101

A replicated counter: every 300-byte command is one replicated call (PySyncObj batches
queued calls into its append entries itself), acknowledged from PySyncObj's callback when
the call is applied here. SyncObjConf defaults (no journal file: PySyncObj keeps its log
in memory and never fsyncs). The client protocol is the one in perf.raft.framing, served
by one reader thread per connection and one writer thread that flushes acknowledgements
in batches, so the client path costs about what ours does.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from perf.raft.framing import FrameBuffer, Op, Status, parse_head, response

HOST = "127.0.0.1"


class _Stop(Exception):
    """Raised by the signal handler to leave the accept loop."""


class Counter(SyncObj):  # type: ignore[misc]
    def __init__(self, self_port: int, partner_ports: list[int], conf: SyncObjConf) -> None:
        super().__init__(f"{HOST}:{self_port}", [f"{HOST}:{p}" for p in partner_ports], conf)
        self.applied_ops = 0

    @replicated  # type: ignore[untyped-decorator]
    def apply(self, command: bytes) -> int:
        self.applied_ops += 1
        return self.applied_ops


class ClientConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        self.cond = threading.Condition()
        self.closed = False

    def queue(self, data: bytes) -> None:
        with self.cond:
            self.out += data
            self.cond.notify()

    def writer(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.out and not self.closed:
                        self.cond.wait()
                    if self.closed:
                        return
                    data, self.out = bytes(self.out), bytearray()
                self.sock.sendall(data)
        except OSError:
            pass


def serve_client(counter: Counter, sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = ClientConn(sock)
    threading.Thread(target=conn.writer, daemon=True).start()
    buf = FrameBuffer()

    def acknowledge(request_id: int) -> Any:
        def callback(result: Any, error: int) -> None:
            ok = error == FAIL_REASON.SUCCESS
            conn.queue(response(Status.COMMITTED if ok else Status.FAILED, request_id))

        return callback

    try:
        while True:
            data = sock.recv(1 << 18)
            if not data:
                break
            for body in buf.feed(data):
                op, request_id, payload = parse_head(body)
                if op == Op.IS_LEADER:
                    leader = counter._isLeader()
                    conn.queue(response(Status.LEADER if leader else Status.NOT_LEADER, request_id))
                    continue
                counter.apply(payload, callback=acknowledge(request_id))
    except OSError:
        pass
    finally:
        with conn.cond:
            conn.closed = True
            conn.cond.notify()
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--self", type=int, required=True, dest="self_port")
    parser.add_argument("--partners", required=True, help="port,port")
    parser.add_argument("--client-port", type=int, required=True)
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a SyncObjConf setting, e.g. appendEntriesPeriod=0.005 (repeatable)",
    )
    args = parser.parse_args(argv)
    settings = {}
    for item in args.conf:
        name, value = item.split("=", 1)
        settings[name] = json.loads(value)
    conf = SyncObjConf(**settings)
    counter = Counter(args.self_port, [int(p) for p in args.partners.split(",")], conf)
    listener = socket.create_server((HOST, args.client_port))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=serve_client, args=(counter, sock), daemon=True).start()
    except _Stop:
        listener.close()
    status = counter.getStatus()
    print(
        json.dumps(
            {
                "self": args.self_port,
                "leader": str(status.get("leader")),
                "applied_ops": counter.applied_ops,
                "log_len": status.get("log_len"),
            }
        ),
        flush=True,
    )
    counter.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())

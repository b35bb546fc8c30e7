"""The sandbox engine end to end: confined workers, batching, failures, shutdown."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest

from node.codes import TxCode
from node.execution.sandbox.channel import Channel
from node.execution.sandbox.errors import NondeterministicExecution
from node.execution.sandbox.host import SandboxEngine
from node.execution.sandbox.inprocess import InProcessMeteredEngine
from node.execution.sandbox.launcher import WorkerConnection, Zygote
from node.execution.types import ContractRejected, Outcome
from tests.sandbox.sandbox_support import KV_SOURCE, MemoryState, invocation, module

HOSTILE = """
def endless(ctx):
    while True:
        pass

def recurse(ctx, depth=0):
    return recurse(ctx, depth + 1)

def huge_power(ctx):
    return 10 ** 10 ** 9

def huge_repeat(ctx):
    return "x" * 10 ** 10

def doubling(ctx):
    s = "x"
    while True:
        s = s + s

def memory_bomb(ctx):
    hoard = []
    while True:
        hoard.append([0] * 100000)

def undeclared_read(ctx):
    return ctx.get_from("kv", "a")

def probe(ctx):
    return test_probe_syscalls()

def abort(ctx):
    test_abort()

def exponential_compare(ctx):
    a = [0]
    b = [0]
    for i in range(30):
        a = [a, a]
        b = [b, b]
    return a == b

def spin(ctx):
    test_spin()
"""

READER = """
DEPENDENCIES = ("kv",)

def read(ctx, key):
    return ctx.get_from("kv", key)

def write_then_read(ctx, key):
    ctx.put(key, "mine")
    return [ctx.get(key), ctx.get_from("kv", key)]
"""

REFUSED_AT_LOAD = {
    "import os": "import os\n",
    "import sys": "def f(ctx):\n    import sys\n",
    "import ctypes": "import ctypes\n",
    "open a file": "def f(ctx):\n    return open('/etc/hostname')\n",
    "socket": "import socket\ndef f(ctx):\n    return socket.socket()\n",
    "subclasses": "def f(ctx):\n    return ().__class__.__base__.__subclasses__()\n",
    "format field": "def f(ctx):\n    return '{0.__class__}'.format(ctx)\n",
    "generator frame": "def f(ctx):\n    return (x for x in ()).gi_frame.f_back\n",
    "traceback": (
        "def f(ctx):\n    try:\n        1 / 0\n    except Exception as e:\n"
        "        return e.__traceback__\n"
    ),
    "lambda globals": "def f(ctx):\n    return (lambda: 0).__globals__\n",
}


def _kv_still_works(engine: SandboxEngine) -> None:
    state = MemoryState()
    put = engine.execute(invocation("kv", "put", {"key": "k", "value": [1, "x"]}), state)
    assert put.code == TxCode.VALID, put.message
    state.apply(put)
    got = engine.execute(invocation("kv", "get", {"key": "k"}), state)
    assert (got.code, got.result) == (TxCode.VALID, b'[1,"x"]')


def _poll(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.005)


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_kv_round_trip_and_events(sandbox: SandboxEngine) -> None:
    state = MemoryState()
    put = sandbox.execute(invocation("kv", "put", {"key": "a", "value": {"n": 1}}), state)
    assert put.code == TxCode.VALID
    assert put.writes == {b"kv/a": b'{"n":1}'}
    assert put.result == b'{"created":true,"key":"a"}'
    assert [(e.name, e.data) for e in put.events] == [("put", b'{"key":"a"}')]
    assert put.reads == {b"kv/a"}
    state.apply(put)
    listed = sandbox.execute(invocation("kv", "list_keys", {}), state)
    assert listed.result == b'["a"]'


def test_batch_sees_earlier_writes_and_skips_failed_ones(sandbox: SandboxEngine) -> None:
    state = MemoryState({b"kv/old": b"1"})
    batch = [
        invocation("kv", "put", {"key": "a", "value": 1}, tx=1),
        invocation("kv", "put", {"key": "", "value": 2}, tx=2),  # fails
        invocation("kv", "get", {"key": "a"}, tx=3),
        invocation("kv", "delete", {"key": "old"}, tx=4),
        invocation("kv", "list_keys", {}, tx=5),
        invocation("kv", "put", {"key": "a", "value": 3}, tx=6),
    ]
    outcomes = sandbox.execute_batch(batch, state)
    codes = [o.code for o in outcomes]
    assert codes == [TxCode.VALID, TxCode.CONTRACT_ERROR, *[TxCode.VALID] * 4]
    assert outcomes[2].result == b"1"
    assert outcomes[4].result == b'["a"]'
    assert outcomes[5].result == b'{"created":false,"key":"a"}'
    # The same batch one call at a time, committing as we go, gives the same outcomes.
    sequential = MemoryState({b"kv/old": b"1"})
    for inv, batched in zip(batch, outcomes, strict=True):
        single = sandbox.execute(inv, sequential)
        assert single == batched
        if single.code == TxCode.VALID:
            sequential.apply(single)


@pytest.mark.parametrize("case", sorted(REFUSED_AT_LOAD))
def test_hostile_module_refused_at_load(sandbox: SandboxEngine, case: str) -> None:
    with pytest.raises(ContractRejected, match=r"^line \d+: "):
        sandbox.load(module("evil", REFUSED_AT_LOAD[case]))
    _kv_still_works(sandbox)


@pytest.mark.parametrize(
    ("function", "code"),
    [
        ("endless", TxCode.OUT_OF_GAS),
        ("recurse", TxCode.CONTRACT_ERROR),
        ("huge_power", TxCode.CONTRACT_ERROR),
        ("huge_repeat", TxCode.OUT_OF_GAS),
        ("doubling", TxCode.OUT_OF_GAS),
        ("memory_bomb", TxCode.OUT_OF_GAS),
        ("undeclared_read", TxCode.PERMISSION_DENIED),
        ("exponential_compare", TxCode.OUT_OF_GAS),
    ],
)
def test_hostile_call_fails_only_itself(
    sandbox: SandboxEngine, function: str, code: TxCode
) -> None:
    sandbox.load(module("hostile", HOSTILE))
    started = sandbox.workers_started
    outcome = sandbox.execute(invocation("hostile", function, gas=300_000), MemoryState())
    assert outcome.code == code, outcome.message
    assert outcome.writes == {}
    assert sandbox.workers_started == started  # the worker survived and keeps serving
    _kv_still_works(sandbox)


def test_declared_dependency_is_readable_and_namespaces_stay_apart(
    sandbox: SandboxEngine,
) -> None:
    sandbox.load(module("reader", READER, ("kv",)))
    state = MemoryState({b"kv/a": b'"theirs"'})
    read = sandbox.execute(invocation("reader", "read", {"key": "a"}), state)
    assert (read.code, read.result, read.reads) == (TxCode.VALID, b'"theirs"', frozenset({b"kv/a"}))
    mixed = sandbox.execute(invocation("reader", "write_then_read", {"key": "a"}), state)
    assert mixed.result == b'["mine","theirs"]'
    assert set(mixed.writes) == {b"reader/a"}


def test_worker_is_confined(sandbox: SandboxEngine) -> None:
    sandbox.load(module("hostile", HOSTILE))
    # The probe runs past the checker (a test-only builtin) and still cannot open a file,
    # make a socket, fork or exec: EPERM from the seccomp filter.
    probe = sandbox.execute(invocation("hostile", "probe"), MemoryState())
    assert probe.code == TxCode.VALID, probe.message
    assert probe.result == b'["errno 1","errno 1","errno 1","errno 1"]'
    pid = sandbox.worker_pid
    assert pid is not None
    with open(f"/proc/{pid}/status") as status_file:
        status = dict(line.split(":", 1) for line in status_file.read().splitlines())
    assert status["Seccomp"].strip() == "2"
    assert status["NoNewPrivs"].strip() == "1"
    if os.geteuid() == 0:
        assert status["Uid"].split()[0] == "65534"
        assert os.listdir(f"/proc/{pid}/root") == []  # chrooted into an empty directory
    assert os.listdir(f"/proc/{pid}/cwd") == []
    assert os.listdir(f"/proc/{pid}/fd") == ["0"]
    # /proc shows the environment the zygote was exec'd with: only what Python needs.
    with open(f"/proc/{pid}/environ", "rb") as environ:
        names = {item.split(b"=")[0] for item in environ.read().split(b"\0") if item}
    assert names <= {b"PYTHONHASHSEED", b"PYTHONDONTWRITEBYTECODE", b"PYTHONPATH"}
    with open(f"/proc/{pid}/limits") as limits:
        text = limits.read()
    assert "Max core file size        0" in text
    assert "Max open files            1" in text


def test_same_call_same_gas_across_workers_engines_and_runs(zygote: Zygote) -> None:
    source = (
        "def spin(ctx, n=0):\n"
        "    while True:\n"
        "        n = n + 1\n"
        "        if n % 5 == 0:\n"
        "            ctx.put('n', str(n) * 3)\n"
    )
    gas_used = set()
    for _ in range(2):
        with SandboxEngine(zygote) as engine:
            engine.load(module("spin", source))
            for _ in range(2):
                out = engine.execute(invocation("spin", "spin", gas=54_321), MemoryState())
                gas_used.add((out.code, out.gas_used))
    local = InProcessMeteredEngine()
    local.load(module("spin", source))
    out = local.execute(invocation("spin", "spin", gas=54_321), MemoryState())
    gas_used.add((out.code, out.gas_used))
    assert gas_used == {(TxCode.OUT_OF_GAS, 54_321)}
    # And for a call that completes: identical outcomes everywhere.
    results: list[Outcome] = []
    state = MemoryState()
    for _ in range(2):  # two engines, so two different workers
        with SandboxEngine(zygote) as engine:
            engine.load(module("kv", KV_SOURCE))
            out = engine.execute(invocation("kv", "put", {"key": "x", "value": [1, 2]}), state)
            results.append(out)
    assert results[0].code == TxCode.VALID
    assert results[0] == results[1]


def test_worker_killed_mid_call_is_replaced(sandbox: SandboxEngine) -> None:
    sandbox.load(module("hostile", HOSTILE))
    _kv_still_works(sandbox)
    pid = sandbox.worker_pid
    assert pid is not None
    before = _cpu_ticks(pid)
    result: list[Outcome] = []
    call = invocation("hostile", "endless", gas=50_000_000)
    thread = threading.Thread(target=lambda: result.append(sandbox.execute(call, MemoryState())))
    thread.start()
    _poll(lambda: _cpu_ticks(pid) > before + 2)  # the worker is busy with the call
    os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert result and result[0].code == TxCode.OUT_OF_GAS
    assert result[0].gas_used == 50_000_000
    assert sandbox.worker_pid not in (None, pid)
    _kv_still_works(sandbox)


def test_call_that_always_kills_its_worker_halts_naming_it(sandbox: SandboxEngine) -> None:
    sandbox.load(module("hostile", HOSTILE))
    state = MemoryState()
    batch = [
        invocation("kv", "put", {"key": "a", "value": 1}, tx=1),
        invocation("hostile", "abort", tx=2),
        invocation("kv", "put", {"key": "b", "value": 2}, tx=3),
    ]
    started = sandbox.workers_started
    with pytest.raises(NondeterministicExecution) as halted:
        sandbox.execute_batch(batch, state)
    assert halted.value.tx_id == (2).to_bytes(32, "big")
    assert (2).to_bytes(32, "big").hex() in str(halted.value)
    assert sandbox.workers_started >= started + 3
    _kv_still_works(sandbox)


def test_hung_worker_passes_its_deadline_and_is_replaced(zygote: Zygote) -> None:
    # A computation the metering does not see (a test hook spinning in engine code) hangs
    # the worker: the host's deadline kills it, and since it hangs every time, the engine
    # refuses to guess an outcome and names the transaction.
    with SandboxEngine(zygote, base_timeout=0.3, seconds_per_gas=0.0) as engine:
        engine.load(module("hostile", HOSTILE))
        engine.load(module("kv", KV_SOURCE))
        started = engine.workers_started
        with pytest.raises(NondeterministicExecution, match="passed its deadline"):
            engine.execute(invocation("hostile", "spin", tx=9), MemoryState())
        assert engine.workers_started == started + 2  # the first worker, then two fresh ones
        _kv_still_works(engine)


def _fake_worker(script: Callable[[Channel], None]) -> WorkerConnection:
    host_end, worker_end = socket.socketpair()
    thread = threading.Thread(target=script, args=(Channel(worker_end),), daemon=True)
    thread.start()
    return WorkerConnection(pid=-1, channel=Channel(host_end))


def test_host_denies_undeclared_reads_and_rejects_foreign_writes(sandbox: SandboxEngine) -> None:
    """A compromised worker gets nothing outside the namespace and its lies are caught."""
    replies: list[object] = []

    def compromised(channel: Channel) -> None:
        channel.recv()  # the run request
        channel.send({"op": "get", "i": 0, "k": "consortium/keys"})
        replies.append(channel.recv())
        outcome = {
            "code": 0,
            "msg": "",
            "result": "null",
            "writes": {"consortium/x": "1"},
            "reads": [],
            "events": [],
            "gas": 1,
        }
        channel.send({"op": "done", "outcomes": [outcome]})

    sandbox._worker = _fake_worker(compromised)
    state = MemoryState({b"consortium/keys": b'"secret"'})
    out = sandbox.execute(invocation("kv", "put", {"key": "k", "value": 1}), state)
    assert replies and "deny" in replies[0]  # type: ignore[operator]
    # The lying worker was discarded; a real one re-ran the call correctly.
    assert out.code == TxCode.VALID and set(out.writes) == {b"kv/k"}


def test_clean_shutdown_leaves_no_processes() -> None:
    zygote = Zygote.start()
    engine = SandboxEngine(zygote)
    engine.load(module("kv", KV_SOURCE))
    _kv_still_works(engine)
    worker_pid, zygote_pid = engine.worker_pid, zygote.pid
    assert worker_pid is not None
    engine.close()
    zygote.close()
    assert zygote._process.returncode == 0
    _poll(lambda: not os.path.exists(f"/proc/{worker_pid}"))
    assert not os.path.exists(f"/proc/{zygote_pid}")


LOOP_SOURCE = """
def work(ctx, n):
    total = 0
    for i in range(n):
        total = total + i
    return total
"""


def test_a_worker_short_of_cpu_is_slow_not_lost(zygote: Zygote) -> None:
    """On a loaded machine a worker that waits for a core passes the wall-clock deadline
    without being stuck: the host counts its CPU time instead, so a deterministic
    execution is not taken for a lost worker (three in a row would halt the node)."""
    import os
    import subprocess
    import sys

    from node.execution.sandbox.host import _cpu_seconds

    with SandboxEngine(zygote, base_timeout=30.0, seconds_per_gas=0.0) as engine:
        engine.load(module("loop", LOOP_SOURCE))
        call = invocation("loop", "work", {"n": 1_000_000}, gas=500_000_000)
        engine.execute(call, MemoryState())  # starts the worker
        pid = engine.worker_pid
        assert pid is not None
        samples = []
        for _ in range(2):
            before = _cpu_seconds(pid) or 0.0
            engine.execute(call, MemoryState())
            samples.append((_cpu_seconds(pid) or 0.0) - before)
        used = max(samples)
    assert used > 0.05, f"calibration too small: {used} s of CPU"
    # Budget 1.6x the CPU the call needs; then share one core with three busy processes
    # so that the call takes about four times its CPU time in wall-clock time.
    with SandboxEngine(zygote, base_timeout=1.6 * used, seconds_per_gas=0.0) as engine:
        engine.load(module("loop", LOOP_SOURCE))
        engine.execute(invocation("loop", "work", {"n": 1}), MemoryState())
        pid = engine.worker_pid
        assert pid is not None
        core = {min(os.sched_getaffinity(0))}
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
        try:
            for hog in hogs:
                os.sched_setaffinity(hog.pid, core)
            os.sched_setaffinity(pid, core)
            outcome = engine.execute(call, MemoryState())
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        assert outcome.code == 0, outcome
        assert engine.starved_waits >= 1

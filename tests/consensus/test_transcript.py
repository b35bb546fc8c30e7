"""Golden transcript: the exact messages of an election, a replicated proposal, a
leader transfer and a ReadIndex round in a 3-node group, compared with a stored
script (STYLE.md 5). A change in behaviour shows up as a readable diff.

Regenerate after an intended change: UPDATE_GOLDEN=1 pytest tests/consensus/test_transcript.py
"""

from __future__ import annotations

import os
from pathlib import Path

from node.consensus import Message
from node.consensus.sim.scripted import ScriptedNet

GOLDEN = Path(__file__).parent / "testdata" / "election_propose_transfer_read.txt"


def describe(m: Message) -> str:
    parts = [f"{m.sender}->{m.to} {m.type.name} term={m.term}"]
    if m.index or m.log_term:
        parts.append(f"index={m.index} log_term={m.log_term}")
    if m.entries:
        parts.append("entries=" + ",".join(f"{e.index}/{e.term}/{e.kind.name}" for e in m.entries))
    if m.commit:
        parts.append(f"commit={m.commit}")
    if m.reject:
        parts.append(f"reject hint={m.reject_hint}/{m.hint_term}")
    if m.context:
        parts.append(f"ctx={m.context.decode()}")
    return " ".join(parts)


def transcript() -> str:
    net = ScriptedNet(["n1", "n2", "n3"], seed=0)
    lines: list[str] = []

    def section(title: str) -> None:
        lines.append(f"# {title}")
        lines.extend(describe(m) for m in net.sent)
        net.sent.clear()

    net.elect("n1")
    section("n1 campaigns: PreVote, then the election, then its no-op")
    net.propose("n1", b"batch-1", b"batch-2")
    section("n1 proposes two entries")
    net.tick(n=1)
    section("one tick: heartbeats")
    net["n1"].node.transfer_leader("n2")
    net.stabilize()
    section("n1 hands leadership to n2")
    net["n3"].node.read_index(b"read-1")
    net.stabilize()
    section("n3 asks for a read index (forwarded to n2)")
    return "\n".join(lines) + "\n"


def test_transcript_matches_golden() -> None:
    got = transcript()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text()

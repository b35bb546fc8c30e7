"""README command 1: `medledger demo` runs the referral story on a real local network of
separate node processes and exits 0, telling the story step by step (issue 7)."""

from __future__ import annotations

from pathlib import Path

from netutil import medledger


def test_demo_tells_the_referral_story(tmp_path: Path) -> None:
    run = medledger("demo", "--keep", str(tmp_path / "kept"), timeout=600)
    assert run.rc == 0, run.out[-3000:] + run.err[-3000:]
    out = run.out
    for line in (
        "refers the patient upward to hosp1",
        "decrypted EMR: Condition 'Unstable angina pectoris'",
        "completing with 1 of 2 signatures is refused",
        "is completed; the loop is closed",
        "is failed on all 5 nodes (failed_at identical: True)",
        "break-glass flag: referral",
        "reason None (sealed fields stay closed)",
        "all ledgers verify; 1 distinct tip height(s) across nodes",
    ):
        assert line in out, f"missing {line!r} in:\n{out}"
    assert "MISMATCH" not in out
    # --keep leaves every node's data and log behind
    kept = tmp_path / "kept" / "consortium"
    assert sorted(p.name for p in (kept / "logs").glob("*.log")) == [
        "hosp1.log", "hosp2.log", "hosp3.log", "hosp4.log", "regulator.log",
    ]  # fmt: skip
    assert (kept / "nodes" / "hosp4" / "data" / "vault" / "records").is_dir()

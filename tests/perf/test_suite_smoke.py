"""The performance suite end to end on a real one-node consortium: a tiny round must
produce a complete report (issue 9). The full short run is behind `-m slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perf.suite import config
from perf.suite.run import main

SUITE = Path(__file__).resolve().parents[2] / "perf" / "suite"
FIELDS = (
    "workload",
    "consenters",
    "submit",
    "send_rate",
    "throughput",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "success",
    "fail",
    "cpu_s_per_tx",
    "rss_mb",
    "ledger_bytes_per_tx",
)


def _report(out: Path) -> dict:  # type: ignore[type-arg]
    [path] = out.glob("suite-*.json")
    assert path.with_suffix(".md").exists() and path.with_suffix(".png").exists()
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_every_config_file_parses() -> None:
    for path in SUITE.glob("*.toml"):
        assert config.load(path).rounds, path


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[round]]\nname = "x"\nworkload = "kv"\nsubmit = "carrier-pigeon"\n')
    with pytest.raises(config.ConfigError, match="submit must be one of"):
        config.load(bad)


@pytest.mark.timeout(60)
def test_tiny_round_reports_every_field(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert main(["--config", str(SUITE / "tiny.toml"), "--out", str(out)]) == 0
    doc = _report(out)
    assert doc["machine"]["cores"] >= 1 and doc["command"].startswith("python -m perf.suite")
    assert [r["submit"] for r in doc["rounds"]] == ["stream", "unary", "stream"]
    for row in doc["rounds"]:
        missing = [f for f in FIELDS if f not in row]
        assert not missing, missing
        assert row["success"] > 0 and row["throughput"] > 0
        # Only the round's own transactions are counted (marked by its tag in their args).
        assert row["committed_by_node"] == {"hosp1": row["success"]}, row["round"]
        assert set(row["cpu_s_per_tx"]) == set(row["rss_mb"]) == {"hosp1"}
        # Anonymous memory is part of RSS (which also counts mapped ledger files).
        assert 0 < row["rss_anon_mb"]["hosp1"] <= row["rss_mb"]["hosp1"]
        assert row["disk_syncs"]["hosp1"]["raft"]["count"] > 0
        # Collections per generation in the round; a short round may have none.
        assert set(row["gc_pauses"]) <= {"hosp1"}
        # The one node proposes every block: all four stages, one of each per block.
        stages = row["block_stages"]["hosp1"]
        assert set(stages) == {"wait", "order", "queue", "apply"}, stages
        assert len({v["count"] for v in stages.values()}) == 1 and stages["apply"]["count"] > 0
    assert doc["rounds"][0]["success"] == 400
    # Referral chains: 30 creates at 30/s, each releasing its receive, then its accept.
    ref = doc["rounds"][2]
    assert ref["workload"] == "referral" and ref["fail"] == 0, ref["fail_codes"]
    assert {s: ref["referral"][s]["success"] for s in ("create", "receive", "accept")} == {
        "create": 30,
        "receive": 30,
        "accept": 30,
    }
    assert ref["success"] == 90 and ref["referral"]["chains_completed"] == 30


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_short_run_stream_round_has_no_failures(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert main(["--config", str(SUITE / "short.toml"), "--out", str(out)]) == 0
    doc = _report(out)
    stream = next(r for r in doc["rounds"] if r["round"] == "kv-stream")
    assert stream["fail"] == 0 and stream["success"] > 0
    referrals = [r for r in doc["rounds"] if r["workload"] == "referral"]
    assert [r["submit"] for r in referrals] == ["unary", "stream"]
    assert all(r["success"] > 0 and r["referral"]["chains_completed"] > 0 for r in referrals)


def test_a_round_longer_than_a_transaction_lives_is_refused(tmp_path: Path) -> None:
    rate = 'rate = { controller = "fixed", tps = 10 }\n'
    long = tmp_path / "long.toml"
    long.write_text('[[round]]\nname = "x"\nworkload = "kv"\nduration_s = 900\n' + rate)
    with pytest.raises(config.ConfigError, match="must be at most 420 s"):
        config.load(long)
    ok = tmp_path / "ok.toml"
    ok.write_text('[[round]]\nname = "x"\nworkload = "kv"\nduration_s = 300\n' + rate)
    assert config.load(ok).rounds
    with pytest.raises(config.ConfigError, match="must be at most 420 s"):
        config.load(ok, {"duration_s": 900.0})  # --duration is checked too


def test_minute_medians_group_samples_by_whole_minutes() -> None:
    from perf.suite.monitor import Sample
    from perf.suite.stats import minute_medians

    def at(t: float, mb: float) -> Sample:
        return Sample(t, {}, {}, {"n": mb}, {}, {"n": mb / 2})

    samples = [at(100, 10), at(130, 30), at(159, 20), at(160, 50), at(219, 70), at(221, 0)]
    assert minute_medians(samples, lambda s: s.rss_mb) == {"n": [20.0, 60.0]}
    assert minute_medians(samples, lambda s: s.anon_mb) == {"n": [10.0, 30.0]}

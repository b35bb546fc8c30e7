"""One round's numbers from the clients' per-transaction times and the node samples.

Definitions (issue 9):
- success: committed with code VALID on the node the client submitted to (a query: answered
  VALID); fail: refused at admission, invalid in a block, an RPC error, or not committed
  before the drain ended; unsent: due after the round's deadline (the sender fell behind)
- latency: from the send of a transaction (of its batch) to the commit event (the block
  arriving on the client's StreamBlocks) of the node it was sent to
- send_rate: sent / (last send - first send)
- throughput: transactions committed VALID on every consenter (the least of the
  consenters' counts over the round's blocks) / (last commit - first send)
- cpu_s_per_tx: CPU seconds of each node's process tree over the round / throughput count
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from node.codes import TxCode
from perf.suite.config import Round
from perf.suite.monitor import Sample
from perf.suite.tracker import (
    IN_FLIGHT,
    LATE,
    PARENT_FAILED,
    RPC_BASE,
    RPC_ERROR,
    TIMEOUT,
    UNSENT,
)
from perf.suite.worker import ClientResult
from perf.suite.workloads import QUERY, SUBMIT


@dataclass(frozen=True)
class Merged:
    send_t: np.ndarray
    done_t: np.ndarray
    code: np.ndarray
    kind: np.ndarray
    step: np.ndarray  # referral step per transaction (0 create, 1 receive, 2 accept) or -1
    chain_s: np.ndarray  # referral chains: create sent -> accept committed


def merge(results: list[ClientResult]) -> Merged:
    def cat(field: str, typecode: str, dtype: Any) -> np.ndarray:
        parts = [np.frombuffer(getattr(r, field), dtype=dtype) for r in results]
        return np.concatenate(parts) if parts else np.array([], dtype=dtype)

    steps = [
        np.frombuffer(r.step, dtype=np.int8)
        if r.step
        else np.full(len(r.code) // 4, -1, dtype=np.int8)  # array('i'): 4 bytes each
        for r in results
    ]
    return Merged(
        cat("send_t", "d", np.float64),
        cat("done_t", "d", np.float64),
        cat("code", "i", np.int32),
        cat("kind", "b", np.int8),
        np.concatenate(steps) if steps else np.array([], dtype=np.int8),
        cat("chain_s", "d", np.float64),
    )


def code_name(code: int) -> str:
    special = {
        UNSENT: "UNSENT",
        TIMEOUT: "TIMEOUT",
        RPC_ERROR: "RPC_ERROR",
        IN_FLIGHT: "LOST",
        PARENT_FAILED: "PARENT_FAILED",
        LATE: "LATE",
    }
    if code in special:
        return special[code]
    if code <= RPC_BASE:
        status = {s.value[0]: s.name for s in grpc.StatusCode}.get(RPC_BASE - code, "?")
        return f"RPC_{status}"
    try:
        return TxCode(code).name
    except ValueError:
        return f"CODE_{code}"


def latency_ms(m: Merged, mask: np.ndarray) -> dict[str, float]:
    lat = (m.done_t[mask] - m.send_t[mask]) * 1000
    if lat.size == 0:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "max_ms": round(float(lat.max()), 1),
        "mean_ms": round(float(lat.mean()), 1),
    }


def timeline(m: Merged, t_origin: float, bin_s: float = 1.0) -> list[dict[str, float]]:
    """Per bin of commit time: committed per second, p50 and p99 latency (ms)."""
    ok = m.code == 0
    done, lat = m.done_t[ok], (m.done_t[ok] - m.send_t[ok]) * 1000
    if done.size == 0:
        return []
    bins = np.floor((done - t_origin) / bin_s).astype(np.int64)
    out = []
    for b in np.unique(bins):
        sel = lat[bins == b]
        out.append(
            {
                "t": round(float(b * bin_s), 3),
                "committed_per_s": round(sel.size / bin_s, 1),
                "p50_ms": round(float(np.percentile(sel, 50)), 1),
                "p99_ms": round(float(np.percentile(sel, 99)), 1),
            }
        )
    return out


def referral_breakdown(m: Merged, ok: np.ndarray, sent: np.ndarray) -> dict[str, Any]:
    """Per step of the referral chains: ok, fail, latency (each its own submit to its own
    commit); and whole chains, from the create's send to the accept's commit."""
    out: dict[str, Any] = {}
    for step, name in enumerate(("create", "receive", "accept")):
        mine = m.step == step
        out[name] = {
            "success": int((ok & mine).sum()),
            "fail": int((sent & ~ok & mine).sum()),
            **latency_ms(m, ok & mine),
        }
    chain_ms = m.chain_s * 1000
    out["chains_completed"] = int(chain_ms.size)
    if chain_ms.size:
        p50, p95, p99 = np.percentile(chain_ms, [50, 95, 99])
        out["chain_ms"] = {
            "p50_ms": round(float(p50), 1),
            "p95_ms": round(float(p95), 1),
            "p99_ms": round(float(p99), 1),
            "max_ms": round(float(chain_ms.max()), 1),
        }
    return out


def _per_node(values: dict[str, float], divisor: float, digits: int) -> dict[str, float]:
    return {k: round(v / divisor, digits) if divisor else 0.0 for k, v in values.items()}


def _ratio(values: list[float]) -> float:
    return round(max(values) / min(values), 3) if values and min(values) > 0 else 0.0


def node_costs(samples: list[Sample], committed: int, rnd: Round) -> dict[str, Any]:
    first, last = samples[0], samples[-1]
    cpu = {n: last.cpu_s[n] - first.cpu_s[n] for n in last.cpu_s}
    sandbox = {n: cpu[n] - (last.daemon_cpu_s[n] - first.daemon_cpu_s[n]) for n in cpu}
    span = max(1e-9, last.t - first.t)
    rss_series = {n: [s.rss_mb[n] for s in samples if s.rss_mb.get(n)] for n in last.rss_mb}
    out: dict[str, Any] = {
        "cpu_s_per_tx": _per_node(cpu, committed, 6),
        "sandbox_cpu_s_per_tx": _per_node(sandbox, committed, 6),
        "cpu_cores_busy": _per_node(cpu, span, 2),
        "rss_mb": {n: round(v, 1) for n, v in last.rss_mb.items()},
        "rss_tree_mb": {n: round(v, 1) for n, v in last.tree_rss_mb.items()},
        "rss_max_min": {
            n: round(max(v) / min(v), 3) if v and min(v) > 0 else 0.0 for n, v in rss_series.items()
        },
    }
    out["rss_anon_mb"] = {n: round(v, 1) for n, v in last.anon_mb.items()}
    if rnd.soak:
        out["rss_series"] = [
            {"t": round(s.t - first.t, 1), **{n: round(v, 1) for n, v in s.rss_mb.items()}}
            for s in samples
        ]
        out["rss_anon_series"] = [
            {"t": round(s.t - first.t, 1), **{n: round(v, 1) for n, v in s.anon_mb.items()}}
            for s in samples
        ]
        out["rss_minute_medians"] = minute_medians(samples, lambda s: s.rss_mb)
        out["rss_anon_minute_medians"] = minute_medians(samples, lambda s: s.anon_mb)
    return out


def minute_medians(
    samples: list[Sample], values: Callable[[Sample], dict[str, float]]
) -> dict[str, list[float]]:
    """Per node, the median of each whole or partial minute of samples."""
    first = samples[0].t
    minutes: dict[str, dict[int, list[float]]] = {}
    for s in samples:
        for n, v in values(s).items():
            if v:
                minutes.setdefault(n, {}).setdefault(int((s.t - first) // 60), []).append(v)
    return {
        n: [round(statistics.median(vs), 1) for _, vs in sorted(by.items())]
        for n, by in minutes.items()
    }


def round_row(
    rnd: Round,
    results: list[ClientResult],
    committed_by_node: dict[str, int],
    samples: list[Sample],
    ledger_bytes: dict[str, int],
    t_origin: float,
) -> dict[str, Any]:
    m = merge(results)
    sent = m.code != UNSENT  # with PARENT_FAILED: due but held back, a failure
    ok = m.code == 0
    success, sent_n = int(ok.sum()), int(sent.sum())
    really_sent = int((~np.isnan(m.send_t)).sum())
    submits = m.kind == SUBMIT
    first_send = float(np.nanmin(m.send_t)) if sent_n else 0.0
    last_send = float(np.nanmax(m.send_t)) if sent_n else 0.0
    last_done = float(np.nanmax(m.done_t[ok])) if success else last_send
    if submits.any():
        committed = min(committed_by_node.values()) if committed_by_node else 0
    else:
        committed = success  # only queries: answered VALID
    queries_ok = int((ok & (m.kind == QUERY)).sum())
    if submits.any() and queries_ok:
        committed += queries_ok  # a query mix: answered queries count as done work
    fail_codes: dict[str, int] = {}
    for code in m.code[sent & ~ok]:
        name = code_name(int(code))
        fail_codes[name] = fail_codes.get(name, 0) + 1
    row: dict[str, Any] = {
        "round": rnd.label,
        "workload": rnd.workload,
        "consenters": rnd.consenters,
        "hospitals": rnd.hospitals,
        "submit": rnd.submit,
        "rate_controller": rnd.rate.controller,
        "target_tps": rnd.target_tps(),
        "clients": rnd.clients,
        "duration_s": rnd.duration_s,
        "send_rate": (round(really_sent / (last_send - first_send), 1) if really_sent > 1 else 0.0),
        # With nothing of its own committed, a round's blocks hold only earlier rounds'
        # backlog: spread it over at least the round's duration, not over its sends.
        "throughput": round(
            committed
            / max(
                1e-9,
                last_done - first_send if success else max(rnd.duration_s, last_send - first_send),
            ),
            1,
        ),
        **latency_ms(m, ok),
        "success": success,
        "fail": sent_n - success,
        "unsent": int((~sent).sum()),
        "fail_codes": fail_codes,
        "committed_by_node": committed_by_node,
        "sign_us_per_tx": round(1e6 * sum(r.sign_s for r in results) / max(1, len(m.code)), 1),
    }
    if (m.kind == QUERY).any() and submits.any():
        row["query_latency"] = latency_ms(m, ok & (m.kind == QUERY))
        row["put_latency"] = latency_ms(m, ok & submits)
    if (m.step >= 0).any():
        row["referral"] = referral_breakdown(m, ok, sent)
    row.update(node_costs(samples, committed, rnd))
    row["ledger_bytes_per_tx"] = _per_node(
        {k: float(v) for k, v in ledger_bytes.items()}, committed, 1
    )
    row["timeline"] = timeline(m, t_origin)
    errors = [r.listener_error for r in results if r.listener_error]
    if errors:
        row["listener_errors"] = errors
    return row

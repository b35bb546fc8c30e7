"""The run's report: one JSON file per run (a list `rounds`, the machine, the command,
the time), a Markdown table, and a summary of the step-rate rounds."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints

COLUMNS = (
    ("round", "round"),
    ("workload", "workload"),
    ("consenters", "cons."),
    ("submit", "submit"),
    ("target_tps", "target/s"),
    ("send_rate", "send/s"),
    ("throughput", "tput/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("success", "ok"),
    ("fail", "fail"),
)


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        # run.main replaces it with the load before the run (this is the end's).
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def document(
    suite: str, command: str, rounds: list[dict[str, Any]], skipped: list[str]
) -> dict[str, Any]:
    return {
        "benchmark": "suite",
        "suite": suite,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "machine": machine(),
        "rounds": rounds,
        "skipped": skipped,
        "saturation": saturation(rounds),
    }


def _node_values(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in values.items())


def stall_line(stalls: dict[str, dict[str, dict[str, float]]], prefix: str = "") -> str:
    """'hosp1 raft 812 (mean 0.4 ms, 2 over 100 ms), ledger ...; hosp2 ...'"""
    return "; ".join(
        f"{node} "
        + ", ".join(
            f"{prefix}{source} {v['count']} (mean {v['mean_ms']} ms, {v['over_100ms']} over 100 ms)"
            for source, v in sorted(sources.items())
        )
        for node, sources in sorted(stalls.items())
    )


STALL_LINES = (
    ("disk_syncs", "synced writes", ""),
    ("gc_pauses", "collections", "gen "),
    ("block_stages", "block stages", ""),
)


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# MedLedger suite `{doc['suite']}` — {doc['when']}",
        "",
        f"`{doc['command']}` on {doc['machine']['cores']} cores "
        f"(1-minute load {doc['machine']['load_avg_1m_at_start']} at start, "
        f"{doc['machine'].get('load_avg_1m_at_end', '?')} at the end).",
        "",
        "| " + " | ".join(h for _, h in COLUMNS) + " | CPU s/tx | RSS MB | ledger B/tx |",
        "|" + "---|" * (len(COLUMNS) + 3),
    ]
    for r in doc["rounds"]:
        cells = [str(r[k]) for k, _ in COLUMNS]
        cells += [
            _node_values(r["cpu_s_per_tx"]),
            _node_values(r["rss_mb"]),
            _node_values(r["ledger_bytes_per_tx"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for r in doc["rounds"]:
        if r["fail_codes"]:
            lines.append(f"\n{r['round']}: failures {r['fail_codes']}")
    for r in doc["rounds"]:
        if "referral" in r:
            lines.append(_referral_line(r["round"], r["referral"]))
    for r in doc["rounds"]:
        for key, what in (("rss_minute_medians", "RSS"), ("rss_anon_minute_medians", "RssAnon")):
            if r.get(key):
                per_node = "; ".join(f"{n} {v}" for n, v in sorted(r[key].items()))
                lines.append(f"\n{r['round']}: {what} minute medians (MB): {per_node}")
    for r in doc["rounds"]:
        for key, what, prefix in STALL_LINES:
            if r.get(key):
                lines.append(f"\n{r['round']}: {what} {stall_line(r[key], prefix)}")
    sat = doc.get("saturation")
    if sat:
        lines += ["", "## Step rate", ""]
        for name, s in sat.items():
            lines.append(
                f"- `{name}`: highest throughput {s['max_throughput']}/s at a target of "
                f"{s['at_target']}/s; first step that fell behind (throughput < 90 % of "
                f"target or p99 > 500 ms): {s['saturated_at_target']}"
            )
    for entry in doc.get("ledger", []):
        lines.append(
            f"\nledger of {entry['node']} at the end: {entry['data_dir_bytes']} bytes for "
            f"{entry['committed_txs']} committed transactions ({entry['bytes_per_tx']} B/tx)"
        )
    for note in doc.get("skipped", []):
        lines.append(f"\n_skipped_: {note}")
    return "\n".join(lines) + "\n"


def _referral_line(name: str, ref: dict[str, Any]) -> str:
    steps = ", ".join(
        f"{step} ok {ref[step]['success']} fail {ref[step]['fail']} "
        f"p50/p99 {ref[step]['p50_ms']}/{ref[step]['p99_ms']} ms"
        for step in ("create", "receive", "accept")
    )
    chain = ref.get("chain_ms")
    whole = f"; {ref['chains_completed']} chains create→accept p50/p99 " + (
        f"{chain['p50_ms']}/{chain['p99_ms']} ms" if chain else "-"
    )
    return f"\n{name}: {steps}{whole}"


def saturation(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per step-rate round: the best throughput and the first step past saturation."""
    out: dict[str, Any] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rounds:
        if r["rate_controller"] == "step":
            groups.setdefault(r["round"].split("#")[0], []).append(r)
    for name, steps in groups.items():
        best = max(steps, key=lambda r: r["throughput"])
        behind = [
            r["target_tps"]
            for r in steps
            if r["throughput"] < 0.9 * r["target_tps"] or r["p99_ms"] > 500 or r["fail"]
        ]
        out[name] = {
            "max_throughput": best["throughput"],
            "at_target": best["target_tps"],
            "saturated_at_target": behind[0] if behind else None,
            "steps": [
                {k: r[k] for k in ("target_tps", "send_rate", "throughput", "p50_ms", "p99_ms")}
                for r in steps
            ],
        }
    return out


def write(doc: dict[str, Any], folder: Path, stem: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{stem}.json"
    md_path = folder / f"{stem}.md"
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    md_path.write_text(markdown(doc))
    return json_path, md_path

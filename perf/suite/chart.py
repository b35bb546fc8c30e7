"""A PNG of the whole run: committed transactions per second, p50/p99 latency and node
RSS over time, one shaded band per round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(doc: dict[str, Any], rss: list[dict[str, float]], path: Path) -> None:
    fig, (ax_tps, ax_lat, ax_rss) = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    for r in doc["rounds"]:
        points = r["timeline"]
        if not points:
            continue
        t = [p["t"] for p in points]
        ax_tps.plot(t, [p["committed_per_s"] for p in points], color="tab:blue")
        ax_lat.plot(t, [p["p50_ms"] for p in points], color="tab:green")
        ax_lat.plot(t, [p["p99_ms"] for p in points], color="tab:red")
        start, end = r["window"]
        ax_tps.axvspan(start, end, alpha=0.08, color="gray")
        ax_tps.text(start, 0, r["round"], rotation=90, fontsize=7, va="bottom")
    ax_tps.set_ylabel("committed tx/s")
    ax_lat.set_ylabel("latency ms (p50 green, p99 red)")
    ax_lat.set_yscale("log")
    if rss:
        names = [k for k in rss[0] if k != "t"]
        for name in names:
            ax_rss.plot([s["t"] for s in rss], [s[name] for s in rss], label=name)
        ax_rss.legend(loc="upper left", fontsize=8)
    ax_rss.set_ylabel("node RSS MB")
    ax_rss.set_xlabel("seconds since the run started")
    fig.suptitle(f"MedLedger suite {doc['suite']} — {doc['when']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

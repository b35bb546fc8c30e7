"""Sandbox cost against in-process execution of the same module, in one run (issue 5).

    python perf/sandbox_bench.py [--batch 500] [--batches 20] [--save]

Prints JSON (kv.put tx/s through the sandbox and in process, the overhead per kv.put,
one ctx.get round trip, a referral-shaped call of 7 reads and 3 writes) and with --save
writes it to perf/results/sandbox.json with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    command = [
        sys.executable,
        "-m",
        "node.execution.sandbox.bench",
        "--json",
        "--batch",
        str(args.batch),
        "--batches",
        str(args.batches),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = {
        "benchmark": "sandbox",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "command": f"python perf/sandbox_bench.py --batch {args.batch} --batches {args.batches}",
        "results": json.loads(out),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sandbox.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

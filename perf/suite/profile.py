"""Top costs in a py-spy `--format raw` profile (collapsed stacks: one line per distinct
stack, frames separated by ';', then the sample count).

    python -m perf.suite.profile /tmp/prof/profile-kv-stream-hosp1.txt [--top 25]

Prints, per function, the share of samples where it is on the stack (inclusive) and
where it is the innermost frame (self), and the share per process (daemon or
sandbox) and thread (with py-spy --threads).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _function(frame: str) -> str:
    """'put (node/ledger/kvstore.py:42)' -> 'put (node/ledger/kvstore.py)': lines of one
    function merged; site-packages paths shortened."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def summarize(text: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        count = int(m.group("count"))
        frames = m.group("stack").split(";")
        process = "sandbox" if "zygote" in frames[0] else "daemon"
        thread = frames[1] if len(frames) > 1 and frames[1].startswith("thread") else ""
        code = [_function(f) for f in frames[1:] if not f.startswith("thread")]
        total += count
        threads[f"{process} {thread}".strip()] += count
        for func in set(code):
            inclusive[func] += count
        if code:
            self_[code[-1]] += count
    return total, inclusive, self_, threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.suite.profile")
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    total, inclusive, self_, threads = summarize(args.path.read_text())
    if not total:
        print("no samples")
        return 1
    print(f"{total} samples")
    print("\n## threads")
    for name, n in threads.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {name}")
    print("\n## inclusive (on the stack)")
    for name, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {name}")
    print("\n## self (innermost frame)")
    for name, n in self_.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

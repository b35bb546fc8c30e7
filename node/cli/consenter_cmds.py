"""`medledger consenter add|remove`: consensus membership by governance (docs/membership.md).

Both submit a `consortium` governance transaction signed by the leader identity and wait
for it to commit; the Raft leader then changes the configuration to match.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

FUNCTIONS = {"add": "add_consenter", "remove": "remove_consenter"}


def add_commands(sub: Any, node_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds `consenter add` and `consenter remove` to the `medledger` parser."""
    p = sub.add_parser("consenter", help="add or remove a consensus member (leader identity)")
    verbs = p.add_subparsers(dest="verb", required=True)
    helps = {
        "add": "make a genesis-listed node a consenter (it joins Raft as a learner first)",
        "remove": "make a consenter an observer again (it keeps following the chain)",
    }
    for verb, text in helps.items():
        q = verbs.add_parser(verb, help=text)
        node_opts(q)
        q.add_argument(
            "--identity",
            required=True,
            metavar="DIR",
            help="the consortium leader's identity folder (key.pem, cert.pem)",
        )
        q.add_argument("--name", required=True, metavar="NODE", help="the node's name, e.g. hosp3")
        q.set_defaults(handler=_handler(FUNCTIONS[verb]))


def _handler(function: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from node.cli.main import _client, emit

        identity = _load_identity(args.identity)
        with _client(args) as client:
            result = client.submit(identity, "consortium", function, {"node": args.name}, wait=True)
        out = result.to_json()
        if result.status == "committed":
            out["note"] = (
                "committed; the Raft leader now changes the configuration "
                "(see `medledger status` on the node: learner, then follower)"
                if function == "add_consenter"
                else "committed; the Raft leader now removes the node from the configuration"
            )
        emit(args, out)
        return 1 if result.status != "committed" else 0

    return run


def _load_identity(path: str) -> Any:
    from node.cli.main import CliError
    from node.sdk.client import Identity

    folder = Path(path)
    if not (folder / "key.pem").is_file() or not (folder / "cert.pem").is_file():
        raise CliError(f"--identity {path}: no key.pem and cert.pem there")
    return Identity.load(folder)

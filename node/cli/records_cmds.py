"""`medledger record put|get|share|erase|info`: patient records through the vault
(DESIGN §6, §8). The payload is encrypted in this process; the node sees ciphertext.

Exit 0 done; 1 the chain or the vault said no (no grant, erased, denied), with one
clear line on stderr and nothing written; 2 the command could not run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

NodeOpts = Callable[[argparse.ArgumentParser], None]


def _resolve_patient(client: Any, caller: Any, name: str, identity_dir: str) -> str:
    """A patient argument: a demo identity folder name next to --identity (its
    registration gives the pseudonym), or the pseudonym itself."""
    from node.sdk.client import Identity

    folder = Path(identity_dir).parent / name
    if (folder / "cert.pem").exists():
        who = Identity.load(folder).id
        reg = client.query(caller, "consortium", "get_identity", {"identity": who})
        registration = (reg or {}).get("registration") or {}
        if registration.get("role") != "patient":
            raise LookupError(f"{name} is not a registered patient")
        return str(registration["pseudonym"])
    return name


def _resolve_identity(name: str, identity_dir: str) -> str:
    from node.sdk.client import Identity

    folder = Path(identity_dir).parent / name
    if (folder / "cert.pem").exists():
        return Identity.load(folder).id
    return name


def _run(args: argparse.Namespace) -> int:
    from node.cli.main import _client, emit
    from node.sdk import records
    from node.sdk.client import Identity, QueryRefused, TxFailed

    identity = Identity.load(args.identity)
    with _client(args) as client:
        try:
            data = args.action(records, client, identity, args)
        except (TxFailed, QueryRefused, records.RecordAccessError, LookupError) as exc:
            print(f"medledger: refused: {exc}", file=sys.stderr)
            if args.json:
                emit(args, {"ok": False, "error": str(exc)})
            return 1
    emit(args, data)
    return 0


def _put(records: Any, client: Any, identity: Any, args: argparse.Namespace) -> dict[str, Any]:
    from node.cli.main import CliError

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"--file {path} is not a readable file")
    patient = _resolve_patient(client, identity, args.patient, args.identity)
    result = records.put(client, identity, patient, path, args.media_type)
    data: dict[str, Any] = result.to_json()
    return data


def _get(records: Any, client: Any, identity: Any, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    result = records.get(
        client, identity, args.id, out, grant=args.grant or "", referral=args.referral or ""
    )
    return {**result.to_json(), "out": str(out)}


def _share(records: Any, client: Any, identity: Any, args: argparse.Namespace) -> dict[str, Any]:
    recipients = [_resolve_identity(name, args.identity) for name in args.to]
    added = records.share(
        client,
        identity,
        args.id,
        recipients,
        grant=args.grant or "",
        referral=args.referral or "",
    )
    return {"record_id": args.id, "added": added}


def _erase(records: Any, client: Any, identity: Any, args: argparse.Namespace) -> dict[str, Any]:
    from node.sdk.client import TxFailed

    result = records.erase(client, identity, args.id)
    if result.status != "committed" or result.code != "VALID":
        raise TxFailed(result)
    data: dict[str, Any] = result.to_json()
    return {"record_id": args.id, **data}


def _info(records: Any, client: Any, identity: Any, args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = records.info(client, identity, args.id)
    return data


def add_commands(sub: Any, node_opts: NodeOpts) -> None:
    """Adds `medledger record ...` to the parser."""
    p = sub.add_parser("record", help="patient records: encrypted in the client, kept in vaults")
    rsub = p.add_subparsers(dest="record_command", required=True, metavar="ACTION")

    def command(name: str, help_text: str, action: Any) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = rsub.add_parser(name, help=help_text)
        node_opts(q)
        q.add_argument("--identity", required=True, metavar="DIR", help="the caller's folder")
        q.set_defaults(handler=_run, action=action)
        return q

    q = command("put", "encrypt a file, store it in the vault, register it on chain", _put)
    q.add_argument("--patient", required=True, help="patient pseudonym or demo name")
    q.add_argument("--file", required=True, metavar="PATH")
    q.add_argument("--media-type", help="MIME type (default: FHIR JSON for *.json bundles)")

    q = command("get", "record an access, fetch, verify and decrypt a record", _get)
    q.add_argument("--id", required=True, metavar="RECORD_ID")
    q.add_argument("--out", required=True, metavar="PATH")
    q.add_argument("--grant", help="consent grant id that covers the caller")
    q.add_argument("--referral", help="referral id that covers the caller")

    q = command("share", "wrap the record's key for more readers (owner, patient)", _share)
    q.add_argument("--id", required=True, metavar="RECORD_ID")
    q.add_argument("--to", required=True, nargs="+", metavar="WHO", help="identity ids or names")
    q.add_argument("--grant", help="the consent grant that lets the caller read")
    q.add_argument("--referral", help="the referral that lets the caller read")

    q = command("erase", "erase a record: every node deletes ciphertext and keys", _erase)
    q.add_argument("--id", required=True, metavar="RECORD_ID")

    q = command("info", "a record's on-chain metadata", _info)
    q.add_argument("--id", required=True, metavar="RECORD_ID")

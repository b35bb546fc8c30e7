"""`medledger institution|department|doctor|patient|identity|keys|consent ...`:
membership, encryption keys and consent (DESIGN §2, §6; docs/administration.md).

Every command signs as `--identity DIR`. Writes wait for their block and print the
transaction's outcome (`tx_id`, `status`, `code`, `message`, `height`) and the contract
function's `result`. Exit 0 when done, 1 when the chain says no (a refused or invalid
transaction, a refused query, nothing found), 2 when the command could not run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The SDK (grpc, cryptography) is imported when a command runs, not when the parser is
# built: `medledger node start` builds the same parser before it forks the sandbox.
if TYPE_CHECKING:
    from node.sdk.consortium import Committed, Consortium

NodeOpts = Callable[[argparse.ArgumentParser], None]
Action = Callable[["Consortium", argparse.Namespace], "Committed | dict[str, Any]"]

TIERS = ("primary", "secondary", "tertiary", "authority")
PURPOSES = ("treatment", "referral", "consultation", "mdt", "follow-up", "research")
SUITES = ("MLKEM768-X25519", "X25519")  # node.records.suites.HpkeSuite values
DAY_MS = 86_400_000


def _fail(message: str) -> int:
    print(f"medledger: {message}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    """Runs `args.action` as the caller and prints its outcome; see the module docstring
    for the exit codes. Errors that mean "could not run" go up to main (exit 2)."""
    from node.cli.main import CliError, _client, emit
    from node.records.errors import RecordError
    from node.sdk.client import Client, Identity, QueryRefused, TxFailed
    from node.sdk.consortium import (
        Committed,
        ConsentGrant,
        Consortium,
        KeyNotVerified,
        NotFound,
    )

    action: Action = args.action
    identity = Identity.load(args.identity)
    root = Path(args.consortium) if args.consortium else None
    with _client(args) as client:
        assert isinstance(client, Client)
        try:
            outcome = action(Consortium(client, identity, root), args)
        except TxFailed as exc:
            emit(args, {**exc.result.to_json(), "result": None})
            return _fail(f"refused: {exc.result.code}: {exc.result.message}")
        except (QueryRefused, NotFound, KeyNotVerified) as exc:
            return _fail(str(exc))
        except RecordError as exc:
            raise CliError(str(exc)) from exc
    if isinstance(outcome, Committed):
        emit(args, outcome.to_json())
        if isinstance(outcome, ConsentGrant) and outcome.share_errors:
            for record_id, problem in outcome.share_errors.items():
                print(
                    f"medledger: grant committed, but the key of record {record_id} was not "
                    f"shared with the grantee (who cannot read it yet): {problem}",
                    file=sys.stderr,
                )
            return 2
        return 0
    emit(args, outcome)
    return 0


# -- actions ------------------------------------------------------------------------------


def _records(text: str) -> str | list[str]:
    from node.cli.main import CliError

    if text.strip() == "*":
        return "*"
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise CliError("--records needs '*' or a comma-separated list of record ids")
    return ids


def _expires_at(args: argparse.Namespace) -> int:
    if args.expires_at is not None:
        return int(args.expires_at)
    return int(time.time() * 1000) + int(args.days * DAY_MS)


def _grant(c: Consortium, a: argparse.Namespace) -> Committed:
    return c.grant_consent(a.grantee, _records(a.records), a.purpose, _expires_at(a), a.grant_id)


def _list_consent(c: Consortium, a: argparse.Namespace) -> dict[str, Any]:
    return c.list_consent(patient=a.patient, pseudonym=a.pseudonym, received=a.received)


def _rotate(c: Consortium, a: argparse.Namespace) -> Committed:
    from node.records.suites import HpkeSuite

    return c.rotate_key(HpkeSuite(a.suite))


def _identity_show(c: Consortium, a: argparse.Namespace) -> dict[str, Any]:
    info = c.identity_info(a.target)
    assert isinstance(info, dict)
    return info


# -- parser -------------------------------------------------------------------------------


def _verb(
    group: Any, name: str, help_text: str, node_opts: NodeOpts, action: Action
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text)
    node_opts(p)
    p.add_argument("--identity", required=True, metavar="DIR", help="the caller's identity folder")
    p.add_argument(
        "--consortium",
        metavar="DIR",
        help="init-consortium folder in which identity names are looked up "
        "(default: the one holding --identity)",
    )
    p.set_defaults(handler=_run, action=action)
    return p


def _group(sub: Any, name: str, help_text: str) -> Any:
    p = sub.add_parser(name, help=help_text)
    return p.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def add_commands(sub: Any, node_opts: NodeOpts) -> None:
    """Adds this module's sub-commands to the `medledger` parser."""
    who = "an identity: 64-hex id, identity folder, or folder name (e.g. hosp2-doctor1)"

    g = _group(sub, "institution", "admit, suspend and reinstate member institutions")
    p = _verb(
        g,
        "admit",
        "admit an institution (leader)",
        node_opts,
        lambda c, a: c.admit_institution(a.institution, a.name, a.tier, a.region),
    )
    p.add_argument("--institution", required=True, help="institution id (certificate O)")
    p.add_argument("--name", required=True)
    p.add_argument("--tier", required=True, choices=TIERS)
    p.add_argument("--region", required=True)
    p = _verb(
        g,
        "suspend",
        "suspend an institution: its members can do nothing (leader)",
        node_opts,
        lambda c, a: c.suspend_institution(a.institution, a.reason),
    )
    p.add_argument("--institution", required=True)
    p.add_argument("--reason", default="")
    p = _verb(
        g,
        "reinstate",
        "reinstate a suspended institution (leader)",
        node_opts,
        lambda c, a: c.reinstate_institution(a.institution),
    )
    p.add_argument("--institution", required=True)
    p = _verb(
        g, "show", "an institution's entry", node_opts, lambda c, a: c.institution(a.institution)
    )
    p.add_argument("--institution", required=True)

    g = _group(sub, "department", "departments of an institution")
    p = _verb(
        g,
        "register",
        "create or update a department of the caller's institution (admin)",
        node_opts,
        lambda c, a: c.register_department(a.department, a.name, not a.no_referrals),
    )
    p.add_argument("--department", required=True, help="opaque public code, e.g. d07")
    p.add_argument("--name", required=True)
    p.add_argument("--no-referrals", action="store_true", help="the department takes none")

    g = _group(sub, "doctor", "doctors of an institution")
    p = _verb(
        g,
        "register",
        "bind a doctor to the caller's institution and a department (admin)",
        node_opts,
        lambda c, a: c.register_doctor(a.doctor, a.name, a.department),
    )
    p.add_argument("--doctor", required=True, metavar="IDENTITY", help=who)
    p.add_argument("--name", required=True)
    p.add_argument("--department", required=True)

    g = _group(sub, "patient", "patients of an institution")
    p = _verb(
        g,
        "register",
        "bind a patient to a consortium pseudonym (admin)",
        node_opts,
        lambda c, a: c.register_patient(a.patient, a.pseudonym),
    )
    p.add_argument("--patient", required=True, metavar="IDENTITY", help=who)
    p.add_argument("--pseudonym", required=True, help="never a name or a national id")

    g = _group(sub, "identity", "certificate identities")
    p = _verb(
        g,
        "revoke",
        "revoke a certificate identity from the next block (leader, or its admin)",
        node_opts,
        lambda c, a: c.revoke(a.target, a.reason),
    )
    p.add_argument("--target", required=True, metavar="IDENTITY", help=who)
    p.add_argument("--reason", default="")
    p = _verb(g, "show", "an identity's registration", node_opts, _identity_show)
    p.add_argument("--target", required=True, metavar="IDENTITY", help=who)

    g = _group(sub, "keys", "the caller's encryption key (HPKE) in the on-chain registry")
    _verb(
        g,
        "register",
        "register the identity folder's encryption key",
        node_opts,
        lambda c, a: c.register_key(),
    )
    p = _verb(
        g,
        "rotate",
        "new key pair (the old private key is archived in the folder) and register it",
        node_opts,
        _rotate,
    )
    p.add_argument("--suite", default=SUITES[0], choices=SUITES)
    p = _verb(
        g,
        "show",
        "an identity's registered key and its history, verified against its certificate",
        node_opts,
        lambda c, a: c.show_key(a.of),
    )
    p.add_argument("--of", metavar="IDENTITY", help=who + " (default: the caller)")

    g = _group(sub, "consent", "a patient's grants of access to records")
    p = _verb(
        g,
        "grant",
        "grant access to records and share their keys with the grantee (patient, owner)",
        node_opts,
        _grant,
    )
    p.add_argument("--grantee", required=True, help=who + ", or institution:<id>")
    p.add_argument(
        "--records", required=True, help="'*' (all of the patient's) or id,id,... (comma list)"
    )
    p.add_argument("--purpose", required=True, choices=PURPOSES)
    when = p.add_mutually_exclusive_group()
    when.add_argument("--days", type=float, default=365.0, help="valid for N days (default 365)")
    when.add_argument("--expires-at", type=int, metavar="UNIX_MS", help="expiry, Unix ms")
    p.add_argument("--grant-id", default="", help="default: g + 24 hex digits of the tx id")
    p = _verb(
        g,
        "revoke",
        "revoke a grant (the patient or the granter)",
        node_opts,
        lambda c, a: c.revoke_consent(a.grant),
    )
    p.add_argument("--grant", required=True, metavar="GRANT_ID")
    p = _verb(
        g,
        "list",
        "grants about a patient, or those naming the caller (default: a patient's own)",
        node_opts,
        _list_consent,
    )
    whose = p.add_mutually_exclusive_group()
    whose.add_argument("--patient", metavar="IDENTITY", help=who)
    whose.add_argument("--pseudonym", help="the patient's consortium pseudonym")
    whose.add_argument("--received", action="store_true", help="grants naming the caller")

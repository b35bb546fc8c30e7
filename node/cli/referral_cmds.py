"""`medledger referral/consult/followup/audit ...`: the referral workflow (DESIGN §7).

Every command takes `--node HOST:PORT --identity DIR [--json]`. Patient, doctor and
identity arguments take a demo name (`hosp2-patient1`, `hosp1-doctor2`: a folder next
to the `--identity` folder) or a raw pseudonym / identity id. Free text (`--reason`,
`--outcome`, `--opinion`, `--note`) is sealed in this process to the referral's parties
(node/sdk/sealed.py). Exit codes as in node/cli/main.py: 1 when the ledger says no (a
refused transaction or query, or an action that found the deadline passed).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the SDK (grpc, cryptography) loads only when a command runs
    from node.sdk.client import Client, Identity

NodeOpts = Callable[[argparse.ArgumentParser], None]
KINDS = ("upward", "downward", "horizontal", "consultation", "mdt")  # = node.sdk.referral.KINDS
AUDIT_TRACES = ("record", "referral", "patient", "identity")


# -- argument resolution -------------------------------------------------------------------


def _sibling(args: argparse.Namespace, name: str) -> Path | None:
    """The identity folder `name` next to the caller's --identity folder, if any."""
    if "/" in name or not name or name.startswith("."):
        return None
    folder = Path(args.identity).resolve().parent / name
    return folder if (folder / "cert.pem").exists() else None


def _patient(args: argparse.Namespace, value: str) -> str:
    from node.sdk.enroll import pseudonym_of

    return pseudonym_of(value) if _sibling(args, value) is not None else value


def _identity_id(args: argparse.Namespace, value: str) -> str:
    from node.sdk.client import Identity

    folder = _sibling(args, value)
    return Identity.load(folder).id if folder is not None else value


def _members(args: argparse.Namespace) -> list[str]:
    names = [m.strip() for part in args.members or [] for m in part.split(",") if m.strip()]
    return [_identity_id(args, m) for m in names]


# -- plumbing --------------------------------------------------------------------------------


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[tuple[Client, Identity]]:
    from node.cli.main import _client
    from node.sdk.client import Identity

    identity = Identity.load(args.identity)
    with _client(args) as client:
        yield client, identity


def _run(args: argparse.Namespace, action: Callable[[Client, Identity], Any]) -> int:
    """Runs `action`, prints its answer; a refusal by the ledger is printed and exit 1."""
    from node.cli.main import emit
    from node.sdk.client import TxFailed
    from node.sdk.referral import Refused
    from node.sdk.sealed import SealedError

    with _session(args) as (client, identity):
        try:
            answer = action(client, identity)
        except TxFailed as exc:
            emit(args, {"ok": False, **exc.result.to_json()})
            return 1
        except Refused as exc:
            emit(args, {"ok": False, "code": exc.code, "message": str(exc)})
            return 1
        except SealedError as exc:
            emit(args, {"ok": False, "code": type(exc).__name__, "message": str(exc)})
            return 1
    if isinstance(answer, list):
        answer = {"items": answer}
    emit(args, answer)
    if isinstance(answer, dict) and answer.get("applied") is False:
        return 1
    return 0


def _common(p: argparse.ArgumentParser, node_opts: NodeOpts) -> None:
    node_opts(p)
    p.add_argument("--identity", required=True, metavar="DIR", help="the caller's identity folder")


def _referral_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id", required=True, dest="referral_id", metavar="REFERRAL_ID")


# -- commands --------------------------------------------------------------------------------


def _create_args(args: argparse.Namespace) -> dict[str, Any]:
    from node.cli.main import CliError

    if bool(args.consent) == bool(args.break_glass):
        raise CliError("name the patient's consent grant (--consent GRANT_ID) or --break-glass")
    return {
        "patient": _patient(args, args.patient),
        "target_institution": args.to,
        "target_department": args.department,
        "reason": args.reason,
        "department_name": args.department_name,
        "records": [r for part in args.records or [] for r in part.split(",") if r],
        "consent": args.consent or "",
        "break_glass": args.break_glass,
        "respond_within_ms": args.respond_within_ms,
        "referral_id": args.referral_id or "",
        "read_via": args.read_via or "",
    }


def cmd_create(args: argparse.Namespace) -> int:
    from node.sdk import referral

    fields = _create_args(args)
    members = _members(args)
    return _run(
        args,
        lambda c, i: referral.create(
            c, i, kind=args.kind, mdt_members=members, mdt_required=args.required, **fields
        ),
    )


def cmd_consult_request(args: argparse.Namespace) -> int:
    from node.sdk import referral

    fields = _create_args(args)
    members = _members(args)
    kind = args.kind or ("mdt" if members else "consultation")
    return _run(
        args,
        lambda c, i: referral.consult_request(
            c, i, kind=kind, mdt_members=members, mdt_required=args.required, **fields
        ),
    )


def _simple(verb: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from node.sdk import referral

        fn = getattr(referral, verb)
        return _run(args, lambda c, i: fn(c, i, args.referral_id))

    return handler


def _with_text(verb: str, attr: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from node.sdk import referral

        fn = getattr(referral, verb)
        return _run(args, lambda c, i: fn(c, i, args.referral_id, getattr(args, attr)))

    return handler


def cmd_followup_add(args: argparse.Namespace) -> int:
    from node.sdk import referral

    return _run(
        args,
        lambda c, i: referral.followup_add(
            c, i, args.referral_id, note=args.note, record_id=args.record or ""
        ),
    )


def cmd_get(args: argparse.Namespace) -> int:
    from node.sdk import referral

    return _run(args, lambda c, i: referral.get(c, i, args.referral_id, args.ciphertext))


def cmd_inbox(args: argparse.Namespace) -> int:
    from node.sdk import referral

    return _run(args, lambda c, i: referral.inbox(c, i, args.department, args.limit))


def cmd_watch(args: argparse.Namespace) -> int:
    """One line per event (JSON lines with --json), until --count events or Ctrl-C."""
    from node.sdk import referral

    seen = 0
    with _session(args) as (client, identity):
        for event in referral.watch(client, identity, args.institution, args.from_height):
            if args.json:
                print(json.dumps(event, sort_keys=False), flush=True)
            else:
                ref = event.get("referral") or event.get("id")
                print(
                    f"height {event['height']} {event['event']} {ref}"
                    f" kind={event.get('kind', '')} status={event.get('status', '')}"
                    f" from={event.get('requester_institution') or event.get('institution', '')}"
                    f" dept={event.get('target_department', '')}",
                    flush=True,
                )
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


def cmd_audit_trace(args: argparse.Namespace) -> int:
    from node.sdk import referral

    value = args.value
    if args.what == "patient":
        value = _patient(args, value)
    elif args.what == "identity":
        value = _identity_id(args, value)
    return _run(
        args,
        lambda c, i: referral.audit_trace(c, i, args.what, value, args.offset, args.limit),
    )


def cmd_audit_stats(args: argparse.Namespace) -> int:
    from node.sdk import referral

    return _run(args, lambda c, i: referral.audit_stats(c, i))


def cmd_audit_flags(args: argparse.Namespace) -> int:
    from node.sdk import referral

    return _run(args, lambda c, i: referral.audit_flags(c, i, args.offset, args.limit))


# -- parser ----------------------------------------------------------------------------------


def _create_opts(p: argparse.ArgumentParser, node_opts: NodeOpts) -> None:
    _common(p, node_opts)
    p.add_argument("--patient", required=True, help="demo name (hosp2-patient1) or pseudonym")
    p.add_argument("--to", required=True, metavar="INSTITUTION", help="target institution")
    p.add_argument("--department", required=True, help="target department code (public)")
    p.add_argument("--reason", required=True, help="free text, sealed to the parties")
    p.add_argument(
        "--department-name", help="the department as the parties see it (sealed; default: code)"
    )
    p.add_argument("--records", action="append", metavar="ID[,ID...]", help="referred records")
    p.add_argument("--consent", metavar="GRANT_ID", help="the patient's consent grant")
    p.add_argument("--break-glass", action="store_true", help="emergency without consent (flagged)")
    p.add_argument("--respond-within-ms", type=int, help="answer deadline (default 72 h)")
    p.add_argument("--referral-id", help="choose the id (default: from the transaction id)")
    p.add_argument(
        "--read-via",
        metavar="REFERRAL_ID",
        help="the referral through which you read the records (when not their owner)",
    )
    p.add_argument(
        "--members", action="append", metavar="DOCTOR[,DOCTOR...]", help="MDT specialists"
    )
    p.add_argument("--required", type=int, default=0, help="MDT sign-offs needed (N of M)")


def add_commands(sub: Any, node_opts: NodeOpts) -> None:
    """Adds this module's sub-commands to the `medledger` parser."""
    p = sub.add_parser("referral", help="refer patients between institutions")
    rsub = p.add_subparsers(dest="referral_command", required=True, metavar="ACTION")
    q = rsub.add_parser("create", help="refer a patient (-> requested)")
    _create_opts(q, node_opts)
    q.add_argument("--kind", required=True, choices=KINDS)
    q.set_defaults(handler=cmd_create)
    for verb, text in (
        ("receive", "acknowledge (target department doctor; -> received)"),
        ("accept", "accept (target department doctor; -> accepted)"),
        ("start", "start care (the accepting doctor; -> in-progress)"),
        ("cancel", "withdraw (the requester; -> cancelled)"),
    ):
        q = rsub.add_parser(verb, help=text)
        _common(q, node_opts)
        _referral_id(q)
        q.set_defaults(handler=_simple(verb))
    q = rsub.add_parser("reject", help="reject (target department doctor; -> rejected)")
    _common(q, node_opts)
    _referral_id(q)
    q.add_argument("--reason", help="why, sealed to the parties")
    q.set_defaults(handler=_with_text("reject", "reason"))
    q = rsub.add_parser("complete", help="complete (the accepting doctor; -> completed)")
    _common(q, node_opts)
    _referral_id(q)
    q.add_argument("--outcome", help="outcome summary, sealed to the parties")
    q.set_defaults(handler=_with_text("complete", "outcome"))
    q = rsub.add_parser("get", help="a referral, with the sealed fields the caller can open")
    _common(q, node_opts)
    _referral_id(q)
    q.add_argument("--ciphertext", action="store_true", help="also print the sealed fields")
    q.set_defaults(handler=cmd_get)
    q = rsub.add_parser("inbox", help="referrals addressed to a department")
    _common(q, node_opts)
    q.add_argument("--department", help="default: the calling doctor's department")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(handler=cmd_inbox)
    q = rsub.add_parser("watch", help="stream referral events addressed to an institution")
    _common(q, node_opts)
    q.add_argument("--institution", help="default: the identity's institution")
    q.add_argument("--from-height", type=int, default=1, help="resume from this height")
    q.add_argument("--count", type=int, default=0, help="stop after this many events")
    q.set_defaults(handler=cmd_watch)

    p = sub.add_parser("consult", help="remote consultation (会诊) and MDT")
    csub = p.add_subparsers(dest="consult_command", required=True, metavar="ACTION")
    q = csub.add_parser("request", help="request a consultation, or an MDT with --members")
    _create_opts(q, node_opts)
    q.add_argument("--kind", choices=("consultation", "mdt"), help="default: mdt with --members")
    q.set_defaults(handler=cmd_consult_request)
    q = csub.add_parser("sign", help="an MDT member signs off (while in-progress)")
    _common(q, node_opts)
    _referral_id(q)
    q.add_argument("--opinion", help="the specialist's opinion, sealed to the parties")
    q.set_defaults(handler=_with_text("consult_sign", "opinion"))

    p = sub.add_parser("followup", help="follow-ups after a downward referral")
    fsub = p.add_subparsers(dest="followup_command", required=True, metavar="ACTION")
    q = fsub.add_parser("add", help="add a follow-up record and/or note")
    _common(q, node_opts)
    _referral_id(q)
    q.add_argument("--note", help="follow-up note, sealed to the parties")
    q.add_argument("--record", metavar="RECORD_ID", help="a follow-up record of the patient")
    q.set_defaults(handler=cmd_followup_add)

    p = sub.add_parser("audit", help="the regulator's traces and statistics (metadata only)")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    q = asub.add_parser("trace", help="history of a record, referral, patient or identity")
    _common(q, node_opts)
    q.add_argument("what", choices=AUDIT_TRACES)
    q.add_argument("value", metavar="ID", help="id, pseudonym, or demo name")
    q.add_argument("--offset", type=int, default=0)
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(handler=cmd_audit_trace)
    q = asub.add_parser("stats", help="referrals by kind, tier, institution, status; timings")
    _common(q, node_opts)
    q.set_defaults(handler=cmd_audit_stats)
    q = asub.add_parser("flags", help="break-glass referrals (made without consent)")
    _common(q, node_opts)
    q.add_argument("--offset", type=int, default=0)
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(handler=cmd_audit_flags)

"""audit: the regulator's read-only view (DESIGN §2, §6): traces and statistics.

It keeps no state of its own. Every other business contract appends, for each object it
touches, an entry to an append-only list in its own namespace:

    histn/<kind>/<id>             number of entries
    hist/<kind>/<id>/<seq:8>      {seq, height, time, tx, contract, action, actor,
                                   actor_role, actor_institution, detail}

(kind: record, patient, referral, grant, identity, institution, flag), and keeps a
`stats` document. `audit` reads them with `get_from` (contracts cannot range over
another contract's namespace, hence the counters) and merges the lists in chain order:
(height, contract, seq). Within one block, entries of different contracts are ordered by
contract name, not by transaction index; each entry carries its tx id, which the
ledger's tx index places exactly. Everything returned is metadata: ciphertext fields
are dropped, and no wrapped key or payload is ever on chain.
"""

# ruff: noqa: F821 -- PermissionDenied is a builtin of the contract sandbox (README).

DEPENDENCIES = ("consortium", "records", "consent", "referral")

MAX_LIMIT = 500
MAX_ID = 128
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"
ENCRYPTED_FIELDS = ("department_enc", "reason_enc", "rejection_enc", "outcome_enc")


def _check_id(value, what):
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise ValueError(f"{what} must be a string of 1 to {MAX_ID} characters")
    if not all(ch in ID_CHARS for ch in value):
        raise ValueError(f"{what} {value!r} may only hold letters, digits and '-_.:'")


def _check_page(offset, limit):
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("offset must be a non-negative integer")
    if not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1 to {MAX_LIMIT}")


def _pad(n):
    return ("00000000" + str(n))[-8:]


def _require_regulator(ctx):
    caller = ctx.caller
    if caller.role != "regulator":
        raise PermissionDenied("audit is for the regulator only")
    holder = ctx.get_from("consortium", "role/regulator")
    if holder is None or holder["identity"] != caller.identity:
        raise PermissionDenied("caller is not the consortium's regulator")
    if ctx.get_from("consortium", "revoked/" + caller.identity) is not None:
        raise PermissionDenied("caller's certificate is revoked")


def _history(ctx, contracts, kind, obj):
    entries = []
    for contract in contracts:
        count = ctx.get_from(contract, "histn/" + kind + "/" + obj) or 0
        for seq in range(count):
            entry = ctx.get_from(contract, "hist/" + kind + "/" + obj + "/" + _pad(seq))
            if entry is not None:
                entries.append(entry)
    entries.sort(key=lambda e: (e["height"], e["time"], e["contract"], e["seq"]))
    return entries


def _page(entries, offset, limit):
    return {
        "total": len(entries),
        "offset": offset,
        "events": entries[offset : offset + limit],
    }


def _strip(value):
    if value is None:
        return None
    for field in ENCRYPTED_FIELDS:
        value.pop(field, None)
    return value


def trace_record(ctx, record_id, offset=0, limit=100):
    """Metadata of a record and everything done with it: upload, grants and revocations
    naming it, referrals listing it, accesses, follow-ups, erasure."""
    _require_regulator(ctx)
    _check_id(record_id, "record_id")
    _check_page(offset, limit)
    entries = _history(ctx, ("records", "consent", "referral"), "record", record_id)
    page = _page(entries, offset, limit)
    page["record"] = ctx.get_from("records", "record/" + record_id)
    return page


def trace_referral(ctx, referral_id, offset=0, limit=100):
    """A referral's metadata (no ciphertext) and every transition, sign-off, follow-up."""
    _require_regulator(ctx)
    _check_id(referral_id, "referral_id")
    _check_page(offset, limit)
    ref = _strip(ctx.get_from("referral", "referral/" + referral_id))
    if ref is not None:
        signers = sorted(ref["signatures"])
        ref["signatures"] = signers
        if ref["status"] in ("requested", "received") and ctx.block_time > ref["deadline"]:
            ref["status"] = "failed"
    page = _page(_history(ctx, ("referral",), "referral", referral_id), offset, limit)
    page["referral"] = ref
    return page


def trace_patient(ctx, patient, offset=0, limit=100):
    """Everything the consortium did about one pseudonym, across all contracts."""
    _require_regulator(ctx)
    _check_id(patient, "patient")
    _check_page(offset, limit)
    contracts = ("consortium", "records", "consent", "referral")
    page = _page(_history(ctx, contracts, "patient", patient), offset, limit)
    page["patient"] = ctx.get_from("consortium", "patient/" + patient)
    return page


def trace_identity(ctx, identity, offset=0, limit=100):
    """Registration, key versions and revocation of one certificate identity."""
    _require_regulator(ctx)
    _check_id(identity, "identity")
    _check_page(offset, limit)
    page = _page(_history(ctx, ("consortium",), "identity", identity), offset, limit)
    page["registration"] = ctx.get_from("consortium", "identity/" + identity)
    return page


def flags(ctx, offset=0, limit=100):
    """Break-glass referrals (made without patient consent), oldest first."""
    _require_regulator(ctx)
    _check_page(offset, limit)
    return _page(_history(ctx, ("referral",), "flag", "break_glass"), offset, limit)


def _averages(timings):
    out = {}
    for key, slot in timings.items():
        summary = dict(slot)
        summary["mean_ms"] = slot["total_ms"] // slot["count"]
        out[key] = summary
    return out


def stats(ctx):
    """Referrals by kind, tier, institution and status; response (created -> accepted or
    rejected) and completion times (created -> completed); records and consent counts."""
    _require_regulator(ctx)
    referrals = ctx.get_from("referral", "stats")
    if referrals is None:
        referrals = {"total": 0, "break_glass": 0, "followups": 0, "mdt_signatures": 0}
        for name in (
            "by_kind",
            "by_status",
            "by_from_tier",
            "by_to_tier",
            "by_from_institution",
            "by_to_institution",
            "response_ms",
            "completion_ms",
        ):
            referrals[name] = {}
    referrals["by_status"] = {k: v for k, v in referrals["by_status"].items() if v}
    referrals["response_ms"] = _averages(referrals["response_ms"])
    referrals["completion_ms"] = _averages(referrals["completion_ms"])
    records = ctx.get_from("records", "stats") or {"records": 0, "accesses": 0, "erasures": 0}
    consent = ctx.get_from("consent", "stats") or {"grants": 0, "revocations": 0}
    return {"referrals": referrals, "records": records, "consent": consent}

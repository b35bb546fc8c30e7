"""referral: the referral state machine of DESIGN §7 (FHIR Task.status).

Every state transition of a referral is in TRANSITIONS just below, and nowhere else:
`_apply` looks an action up there (who may do it, from which status, to which status)
before any action-specific guard runs; `create` makes a referral `requested`, and a
passed deadline takes the `fail` rows (`_awaiting_answer`).

Time is block time only (`ctx.block_time`): a referral still `requested` or `received`
after its deadline is `failed`. That is decided when the referral is read (reads show
the effective status), when a transaction touches it (the failure is written and the
touching action is not performed), and by `sweep`, which the node calls at the end of
every block so that the failure is written at the same height on every node.

Kinds: upward (to a higher tier), downward (to a lower tier), horizontal (same tier,
another institution), consultation (会诊, any tier) and mdt (N-of-M specialist sign-off).
Department and reason are ciphertext made by the client for the parties; the contract
stores them opaquely and never returns them to the regulator.

State keys:
    referral/<id>                           the referral
    due/<deadline:15>/<id>                  1 while requested/received (for `sweep`)
    inbox/<inst>/<dept>/<id>                1 (referrals addressed to a department)
    by_patient/<pseudonym>/<id>             1
    followup/<id>/<n:8>                     follow-up entries of a downward referral
    stats                                   counters for `audit.stats`
    hist/<kind>/<id>/<seq:8>, histn/<kind>/<id>   kind: referral, patient, record, flag
"""

# ruff: noqa: F821 -- PermissionDenied is a builtin of the contract sandbox (README).

DEPENDENCIES = ("consortium", "consent", "records")

# (action, from status, to status, who may do it). The one table of transitions.
TRANSITIONS = (
    ("receive", "requested", "received", "target"),
    ("accept", "received", "accepted", "target"),
    ("reject", "received", "rejected", "target"),
    ("start", "accepted", "in-progress", "acceptor"),
    ("sign", "in-progress", "in-progress", "mdt_member"),
    ("complete", "in-progress", "completed", "acceptor"),
    ("followup_add", "accepted", "accepted", "followup_party"),
    ("followup_add", "in-progress", "in-progress", "followup_party"),
    ("followup_add", "completed", "completed", "followup_party"),
    ("cancel", "requested", "cancelled", "requester"),
    ("cancel", "received", "cancelled", "requester"),
    ("cancel", "accepted", "cancelled", "requester"),
    ("fail", "requested", "failed", "deadline"),
    ("fail", "received", "failed", "deadline"),
)
KINDS = frozenset({"upward", "downward", "horizontal", "consultation", "mdt"})
CONSENT_PURPOSES = frozenset({"treatment", "referral", "consultation", "mdt"})
DEFAULT_RESPONSE_MS = 259_200_000  # 72 hours
MIN_RESPONSE_MS = 1000
MAX_RESPONSE_MS = 2_592_000_000  # 30 days
MAX_RECORDS = 50
MAX_MDT = 20
MAX_CIPHERTEXT = 16384
MAX_ID = 128
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"
ENCRYPTED_FIELDS = ("department_enc", "reason_enc", "rejection_enc", "outcome_enc")
# Sealed fields live beside the record (`sealed/<id>/<field>`, an MDT opinion under
# `sealed/<id>/opinion_enc/<member>`), each written once: every transition rewrites the
# record (and the ledger keeps every version of it), which would copy the ciphertext of
# the reason, often kilobytes, each time. `get` puts them back for the parties.
SEALED = "sealed/"


# -- helpers --------------------------------------------------------------------------


def _check_id(value, what):
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise ValueError(f"{what} must be a string of 1 to {MAX_ID} characters")
    if not all(ch in ID_CHARS for ch in value):
        raise ValueError(f"{what} {value!r} may only hold letters, digits and '-_.:'")


def _check_ciphertext(value, what, required):
    if not isinstance(value, str) or len(value) > MAX_CIPHERTEXT:
        raise ValueError(f"{what} must be ciphertext text of at most {MAX_CIPHERTEXT} characters")
    if required and not value:
        raise ValueError(f"{what} is required (ciphertext made by the client for the parties)")


def _pad(n, width=8):
    text = str(n)
    return "0" * (width - len(text)) + text


def _rank(tier):
    return {"primary": 1, "secondary": 2, "tertiary": 3}.get(tier, 0)


def _member(ctx, roles):
    """The caller's registration if its role is in `roles`, it is registered, active, not
    revoked, and its institution is active; PermissionDenied otherwise."""
    caller = ctx.caller
    if caller.role not in roles:
        raise PermissionDenied(f"role {caller.role!r} may not do this")
    if ctx.get_from("consortium", "revoked/" + caller.identity) is not None:
        raise PermissionDenied("caller's certificate is revoked")
    if caller.role in ("leader", "regulator"):
        holder = ctx.get_from("consortium", "role/" + caller.role)
        if holder is None or holder["identity"] != caller.identity:
            raise PermissionDenied(f"caller is not the consortium's {caller.role}")
        return {"role": caller.role}
    inst = ctx.get_from("consortium", "institution/" + caller.institution)
    if inst is None or inst["status"] != "active":
        raise PermissionDenied(f"institution {caller.institution!r} is not an active member")
    if caller.role == "institution":
        return {"role": "institution", "institution": caller.institution}
    me = ctx.get_from("consortium", "identity/" + caller.identity)
    if me is None or me["status"] != "active":
        raise PermissionDenied("caller is not a registered, active identity")
    if me["role"] != caller.role or me["institution"] != caller.institution:
        raise PermissionDenied("caller's certificate does not match its registration")
    return me


def _log(ctx, kind, obj, action, detail, by_clock=False):
    """Appends to an object's history. A deadline failure is the block clock's doing,
    whoever's transaction (or the node's sweep) wrote it: it names no caller, so the
    sweep writes the same bytes on every node whatever identity the node calls it with."""
    count_key = "histn/" + kind + "/" + obj
    n = ctx.get(count_key) or 0
    entry = {
        "seq": n,
        "height": ctx.height,
        "time": ctx.block_time,
        "tx": ctx.tx_id,
        "contract": "referral",
        "action": action,
        "actor": "" if by_clock else ctx.caller.identity,
        "actor_role": "clock" if by_clock else ctx.caller.role,
        "actor_institution": "" if by_clock else ctx.caller.institution,
        "detail": detail,
    }
    ctx.put("hist/" + kind + "/" + obj + "/" + _pad(n), entry)
    ctx.put(count_key, n + 1)


def _count(table, key, by=1):
    table[key] = table.get(key, 0) + by


def _timing(table, key, value):
    slot = table.get(key) or {"count": 0, "total_ms": 0, "min_ms": value, "max_ms": value}
    slot["count"] = slot["count"] + 1
    slot["total_ms"] = slot["total_ms"] + value
    slot["min_ms"] = min(slot["min_ms"], value)
    slot["max_ms"] = max(slot["max_ms"], value)
    table[key] = slot


def _stats(ctx):
    stats = ctx.get("stats")
    if stats is None:
        stats = {"total": 0, "break_glass": 0, "followups": 0, "mdt_signatures": 0}
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
            stats[name] = {}
    return stats


def _due_key(ref):
    return "due/" + _pad(ref["deadline"], 15) + "/" + ref["id"]


def _effective_status(ctx, ref):
    if _awaiting_answer(ref["status"]) and ctx.block_time > ref["deadline"]:
        return "failed"
    return ref["status"]


def _seal(ctx, referral_id, field, ciphertext):
    ctx.put(SEALED + referral_id + "/" + field, ciphertext)


def _with_sealed(ctx, ref):
    """The record with its sealed fields, as the parties see it."""
    for field in ENCRYPTED_FIELDS:
        ciphertext = ctx.get(SEALED + ref["id"] + "/" + field)
        if ciphertext is not None:
            ref[field] = ciphertext
    for member, signature in ref["signatures"].items():
        opinion = ctx.get(SEALED + ref["id"] + "/opinion_enc/" + member)
        if opinion is not None:
            signature["opinion_enc"] = opinion
    return ref


def _load(ctx, referral_id):
    _check_id(referral_id, "referral_id")
    ref = ctx.get("referral/" + referral_id)
    if ref is None:
        raise ValueError(f"no referral {referral_id!r}")
    return ref


def _summary(ref):
    return {
        "id": ref["id"],
        "kind": ref["kind"],
        "status": ref["status"],
        "patient": ref["patient"],
        "requester_institution": ref["requester_institution"],
        "target_institution": ref["target_institution"],
        "from_tier": ref["from_tier"],
        "to_tier": ref["to_tier"],
        "break_glass": ref["break_glass"],
    }


# -- the transition engine ------------------------------------------------------------


def _rows(action):
    return [row for row in TRANSITIONS if row[0] == action]


def _awaiting_answer(status):
    """Statuses the deadline can fail (the `fail` rows): they have a `due/` entry."""
    return any(row[0] == "fail" and row[1] == status for row in TRANSITIONS)


def _check_actor(ctx, me, ref, actor):
    identity = ctx.caller.identity
    in_target = me["institution"] == ref["target_institution"]
    in_target = in_target and me["department"] == ref["target_department"]
    if actor == "target":
        if not in_target:
            raise PermissionDenied("only doctors of the target department may do this")
    elif actor == "acceptor":
        # Before acceptance there is no acceptor yet: the target department's doctors
        # then hear about the status (CONTRACT_ERROR), everyone else is refused.
        accepted_by = ref.get("accepted_by")
        if identity != accepted_by and not (accepted_by is None and in_target):
            raise PermissionDenied("only the accepting doctor may do this")
    elif actor == "requester":
        if identity != ref["requester"]:
            raise PermissionDenied("only the requesting doctor may do this")
    elif actor == "mdt_member":
        if identity not in ref["mdt_members"]:
            raise PermissionDenied("only a member of this MDT may sign it off")
    elif actor == "followup_party":
        in_target = me["institution"] == ref["target_institution"]
        if identity != ref["requester"] and not in_target:
            raise PermissionDenied("follow-ups come from the receiving institution or requester")
    else:
        raise PermissionDenied("this transition is not made by a caller")


def _move(ctx, ref, to_status, action, detail):
    """Writes the referral in its new status, with stats, history and an event."""
    old = ref["status"]
    stats = _stats(ctx)
    if to_status != old:
        _count(stats["by_status"], old, -1)
        _count(stats["by_status"], to_status)
        if _awaiting_answer(old) and not _awaiting_answer(to_status):
            ctx.delete(_due_key(ref))
    ref["status"] = to_status
    ref["updated_at"] = ctx.block_time
    if action in ("accept", "reject"):
        _timing(stats["response_ms"], "all", ctx.block_time - ref["created_at"])
        _timing(stats["response_ms"], ref["kind"], ctx.block_time - ref["created_at"])
    if action == "complete":
        _timing(stats["completion_ms"], "all", ctx.block_time - ref["created_at"])
        _timing(stats["completion_ms"], ref["kind"], ctx.block_time - ref["created_at"])
    if action == "sign":
        stats["mdt_signatures"] = stats["mdt_signatures"] + 1
    if action == "followup_add":
        stats["followups"] = stats["followups"] + 1
    ctx.put("stats", stats)
    ctx.put("referral/" + ref["id"], ref)
    entry = {"referral": ref["id"], "from": old, "to": to_status}
    for key, value in detail.items():
        entry[key] = value
    by_clock = action == "fail"
    _log(ctx, "referral", ref["id"], action, entry, by_clock)
    _log(ctx, "patient", ref["patient"], "referral_" + action, entry, by_clock)
    event = _summary(ref)
    event["action"] = action
    event["target_department"] = ref["target_department"]
    ctx.emit("referral_" + action, event)


def _fail(ctx, ref):
    ref["failed_at"] = ctx.block_time
    _move(ctx, ref, "failed", "fail", {"deadline": ref["deadline"]})


def _apply(ctx, referral_id, action):
    """Checks caller, deadline and status for `action`; returns (ref, to_status, me), or
    (ref, None, me) when the deadline had passed and the referral was failed instead."""
    me = _member(ctx, ("doctor",))
    ref = _load(ctx, referral_id)
    rows = _rows(action)
    _check_actor(ctx, me, ref, rows[0][3])
    if _effective_status(ctx, ref) == "failed" and ref["status"] != "failed":
        _fail(ctx, ref)
        return ref, None, me
    for _action, from_status, to_status, _actor in rows:
        if from_status == ref["status"]:
            return ref, to_status, me
    raise ValueError(f"cannot {action} referral {referral_id!r}: it is {ref['status']}")


def _failed_result(ref):
    return {"id": ref["id"], "status": "failed", "applied": False, "reason": "deadline passed"}


def _done(ref):
    return {"id": ref["id"], "status": ref["status"], "applied": True}


# -- consent and records --------------------------------------------------------------


def _check_records(ctx, patient, records):
    if not isinstance(records, (list, tuple)) or len(records) > MAX_RECORDS:
        raise ValueError(f"records must be a list of at most {MAX_RECORDS} record ids")
    for record_id in records:
        _check_id(record_id, "record id")
        record = ctx.get_from("records", "record/" + record_id)
        if record is None or record["status"] != "active":
            raise ValueError(f"record {record_id!r} does not exist or is erased")
        if record["patient"] != patient:
            raise ValueError(f"record {record_id!r} belongs to another patient")
    if len(set(records)) != len(records):
        raise ValueError("records lists a record twice")


def _check_consent(ctx, consent_id, patient, target_institution, records):
    _check_id(consent_id, "consent")
    grant = ctx.get_from("consent", "grant/" + consent_id)
    if grant is None or grant["status"] != "active":
        raise PermissionDenied(f"consent grant {consent_id!r} does not exist or was revoked")
    if ctx.block_time >= grant["expires_at"]:
        raise PermissionDenied(f"consent grant {consent_id!r} has expired")
    if grant["patient"] != patient:
        raise PermissionDenied("the consent grant is for another patient")
    if grant["grantee"] != "institution:" + target_institution:
        raise PermissionDenied("the consent grant does not name the target institution")
    if grant["purpose"] not in CONSENT_PURPOSES:
        raise PermissionDenied(f"a consent for {grant['purpose']!r} does not cover a referral")
    if grant["records"] != "*":
        for record_id in records:
            if record_id not in grant["records"]:
                raise PermissionDenied(f"the consent grant does not cover record {record_id!r}")


def _check_tiers(kind, from_tier, to_tier, same_institution):
    if _rank(from_tier) == 0:
        raise ValueError(f"a {from_tier} institution does not refer patients")
    if _rank(to_tier) == 0:
        raise ValueError(f"a {to_tier} institution does not take referrals")
    if same_institution and kind not in ("consultation", "mdt"):
        raise ValueError(f"a {kind} referral goes to another institution")
    if kind == "upward" and not _rank(to_tier) > _rank(from_tier):
        raise ValueError(f"an upward referral goes to a higher tier than {from_tier}")
    if kind == "downward" and not _rank(to_tier) < _rank(from_tier):
        raise ValueError(f"a downward referral goes to a lower tier than {from_tier}")
    if kind == "horizontal" and _rank(to_tier) != _rank(from_tier):
        raise ValueError(f"a horizontal referral stays at tier {from_tier}")


def _check_mdt(ctx, kind, members, required):
    if kind != "mdt":
        if members or required:
            raise ValueError("mdt_members and mdt_required are for kind 'mdt' only")
        return []
    if not isinstance(members, (list, tuple)) or not 2 <= len(members) <= MAX_MDT:
        raise ValueError(f"an MDT names 2 to {MAX_MDT} specialists in mdt_members")
    if len(set(members)) != len(members):
        raise ValueError("mdt_members lists a doctor twice")
    if not isinstance(required, int) or not 1 <= required <= len(members):
        raise ValueError("mdt_required must be between 1 and the number of members")
    for identity in members:
        if not isinstance(identity, str):
            raise ValueError("mdt_members are identities")
        who = ctx.get_from("consortium", "identity/" + identity)
        if who is None or who["role"] != "doctor" or who["status"] != "active":
            raise ValueError(f"MDT member {identity[:16]!r} is not a registered, active doctor")
    return list(members)


# -- transactions ---------------------------------------------------------------------


def create(
    ctx,
    patient,
    kind,
    target_institution,
    target_department,
    department_enc,
    reason_enc,
    records=(),
    consent="",
    break_glass=False,
    respond_within_ms=259_200_000,  # DEFAULT_RESPONSE_MS (defaults must be literals)
    mdt_members=(),
    mdt_required=0,
    referral_id="",
):
    """A doctor refers a patient (-> requested). Needs the patient's consent grant naming
    the target institution, or break_glass (flagged for the regulator). The client wraps
    the record keys for the target department's doctors (consortium.list_doctors)."""
    me = _member(ctx, ("doctor",))
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}")
    if not referral_id:
        referral_id = "r" + ctx.tx_id[:24]
    _check_id(referral_id, "referral_id")
    if ctx.get("referral/" + referral_id) is not None:
        raise ValueError(f"referral {referral_id!r} already exists")
    _check_id(patient, "patient")
    if ctx.get_from("consortium", "patient/" + patient) is None:
        raise ValueError(f"no registered patient {patient!r}")
    _check_id(target_institution, "target_institution")
    _check_id(target_department, "target_department")
    target = ctx.get_from("consortium", "institution/" + target_institution)
    if target is None or target["status"] != "active":
        raise ValueError(f"target institution {target_institution!r} is not an active member")
    dept_key = "department/" + target_institution + "/" + target_department
    department = ctx.get_from("consortium", dept_key)
    if department is None:
        raise ValueError(f"no department {target_department!r} in {target_institution!r}")
    if not department["accepts_referrals"]:
        raise ValueError(f"department {target_department!r} does not accept referrals")
    same = target_institution == me["institution"]
    if same and target_department == me["department"]:
        raise ValueError("a referral goes to another department")
    source = ctx.get_from("consortium", "institution/" + me["institution"])
    _check_tiers(kind, source["tier"], target["tier"], same)
    _check_ciphertext(department_enc, "department_enc", True)
    _check_ciphertext(reason_enc, "reason_enc", True)
    _check_records(ctx, patient, records)
    members = _check_mdt(ctx, kind, mdt_members, mdt_required)
    if not isinstance(respond_within_ms, int) or isinstance(respond_within_ms, bool):
        raise ValueError("respond_within_ms must be an integer number of milliseconds")
    if not MIN_RESPONSE_MS <= respond_within_ms <= MAX_RESPONSE_MS:
        raise ValueError(f"respond_within_ms must be {MIN_RESPONSE_MS} to {MAX_RESPONSE_MS}")
    if not isinstance(break_glass, bool):
        raise ValueError("break_glass must be true or false")
    if break_glass:
        consent = ""
    elif consent:
        _check_consent(ctx, consent, patient, target_institution, records)
    else:
        raise PermissionDenied("patient consent required: name a consent grant or break_glass")
    ref = {
        "id": referral_id,
        "kind": kind,
        "status": "requested",
        "patient": patient,
        "requester": ctx.caller.identity,
        "requester_institution": me["institution"],
        "requester_department": me["department"],
        "from_tier": source["tier"],
        "target_institution": target_institution,
        "target_department": target_department,
        "to_tier": target["tier"],
        "records": list(records),
        "consent": consent,
        "break_glass": break_glass,
        "created_at": ctx.block_time,
        "updated_at": ctx.block_time,
        "deadline": ctx.block_time + respond_within_ms,
        "mdt_members": members,
        "mdt_required": mdt_required,
        "signatures": {},
        "followups": 0,
    }
    ctx.put("referral/" + referral_id, ref)
    _seal(ctx, referral_id, "department_enc", department_enc)
    _seal(ctx, referral_id, "reason_enc", reason_enc)
    ctx.put(_due_key(ref), 1)
    ctx.put("inbox/" + target_institution + "/" + target_department + "/" + referral_id, 1)
    ctx.put("by_patient/" + patient + "/" + referral_id, 1)
    stats = _stats(ctx)
    stats["total"] = stats["total"] + 1
    _count(stats["by_kind"], kind)
    _count(stats["by_status"], "requested")
    _count(stats["by_from_tier"], source["tier"])
    _count(stats["by_to_tier"], target["tier"])
    _count(stats["by_from_institution"], me["institution"])
    _count(stats["by_to_institution"], target_institution)
    if break_glass:
        stats["break_glass"] = stats["break_glass"] + 1
    ctx.put("stats", stats)
    detail = _summary(ref)
    detail["deadline"] = ref["deadline"]
    detail["records"] = ref["records"]
    _log(ctx, "referral", referral_id, "create", detail)
    _log(ctx, "patient", patient, "referral_create", detail)
    for record_id in ref["records"]:
        _log(ctx, "record", record_id, "referral_create", {"referral": referral_id})
    event = _summary(ref)
    event["target_department"] = target_department
    event["deadline"] = ref["deadline"]
    ctx.emit("referral_create", event)
    if break_glass:
        flag = {"referral": referral_id, "patient": patient, "requester": ctx.caller.identity}
        flag["institution"] = me["institution"]
        flag["target_institution"] = target_institution
        _log(ctx, "flag", "break_glass", "break_glass", flag)
        ctx.emit("break_glass", flag)
    return ref


def receive(ctx, referral_id):
    """A doctor of the target department acknowledges the referral (-> received)."""
    ref, to_status, _me = _apply(ctx, referral_id, "receive")
    if to_status is None:
        return _failed_result(ref)
    ref["received_by"] = ctx.caller.identity
    ref["received_at"] = ctx.block_time
    _move(ctx, ref, to_status, "receive", {})
    return _done(ref)


def accept(ctx, referral_id):
    """A doctor of the target department accepts (-> accepted) and becomes its owner."""
    ref, to_status, _me = _apply(ctx, referral_id, "accept")
    if to_status is None:
        return _failed_result(ref)
    ref["accepted_by"] = ctx.caller.identity
    ref["answered_at"] = ctx.block_time
    _move(ctx, ref, to_status, "accept", {})
    return _done(ref)


def reject(ctx, referral_id, rejection_enc=""):
    """A doctor of the target department rejects (-> rejected); the reason is ciphertext."""
    _check_ciphertext(rejection_enc, "rejection_enc", False)
    ref, to_status, _me = _apply(ctx, referral_id, "reject")
    if to_status is None:
        return _failed_result(ref)
    ref["rejected_by"] = ctx.caller.identity
    ref["answered_at"] = ctx.block_time
    _seal(ctx, referral_id, "rejection_enc", rejection_enc)
    _move(ctx, ref, to_status, "reject", {})
    return _done(ref)


def start(ctx, referral_id):
    """The accepting doctor starts the care (-> in-progress)."""
    ref, to_status, _me = _apply(ctx, referral_id, "start")
    if to_status is None:
        return _failed_result(ref)
    ref["started_at"] = ctx.block_time
    _move(ctx, ref, to_status, "start", {})
    return _done(ref)


def sign(ctx, referral_id, opinion_enc=""):
    """An MDT member signs off (while in-progress); the opinion is ciphertext."""
    _check_ciphertext(opinion_enc, "opinion_enc", False)
    ref, to_status, _me = _apply(ctx, referral_id, "sign")
    if to_status is None:
        return _failed_result(ref)
    if ctx.caller.identity in ref["signatures"]:
        raise ValueError("this MDT member has already signed")
    ref["signatures"][ctx.caller.identity] = {"at": ctx.block_time}
    _seal(ctx, referral_id, "opinion_enc/" + ctx.caller.identity, opinion_enc)
    _move(ctx, ref, to_status, "sign", {"signatures": len(ref["signatures"])})
    return _done(ref)


def complete(ctx, referral_id, outcome_enc=""):
    """The accepting doctor completes (-> completed); an MDT needs N of M sign-offs."""
    _check_ciphertext(outcome_enc, "outcome_enc", False)
    ref, to_status, _me = _apply(ctx, referral_id, "complete")
    if to_status is None:
        return _failed_result(ref)
    signed = len(ref["signatures"])
    if ref["kind"] == "mdt" and signed < ref["mdt_required"]:
        raise ValueError(f"the MDT needs {ref['mdt_required']} sign-offs, it has {signed}")
    ref["completed_at"] = ctx.block_time
    _seal(ctx, referral_id, "outcome_enc", outcome_enc)
    _move(ctx, ref, to_status, "complete", {})
    return _done(ref)


def cancel(ctx, referral_id):
    """The requesting doctor withdraws the referral before care starts (-> cancelled)."""
    ref, to_status, _me = _apply(ctx, referral_id, "cancel")
    if to_status is None:
        return _failed_result(ref)
    ref["cancelled_at"] = ctx.block_time
    _move(ctx, ref, to_status, "cancel", {})
    return _done(ref)


def followup_add(ctx, referral_id, record_id="", note_enc=""):
    """A follow-up after a downward referral: a record of the same patient and/or an
    encrypted note, by the receiving institution's doctors or the requester."""
    _check_ciphertext(note_enc, "note_enc", False)
    ref, to_status, _me = _apply(ctx, referral_id, "followup_add")
    if to_status is None:
        return _failed_result(ref)
    if ref["kind"] != "downward":
        raise ValueError("follow-ups are recorded on downward referrals")
    if not record_id and not note_enc:
        raise ValueError("a follow-up names a record_id or carries a note_enc")
    if record_id:
        _check_records(ctx, ref["patient"], [record_id])
    n = ref["followups"]
    entry = {"n": n, "by": ctx.caller.identity, "at": ctx.block_time, "record": record_id}
    entry["note_enc"] = note_enc
    ctx.put("followup/" + ref["id"] + "/" + _pad(n), entry)
    ref["followups"] = n + 1
    _move(ctx, ref, to_status, "followup_add", {"followup": n, "record": record_id})
    if record_id:
        _log(ctx, "record", record_id, "followup_add", {"referral": ref["id"]})
    return _done(ref)


def sweep(ctx, limit=100):
    """Looks at the `limit` earliest deadline entries and fails, in deadline order, the
    referrals whose response deadline is before this block's time (an entry whose
    referral was answered is dropped and counts towards the limit). The node calls it at
    the end of every block (any caller may); what is left waits for the next block."""
    if not isinstance(limit, int) or not 0 < limit <= 1000:
        raise ValueError("limit must be 1 to 1000")
    failed = []
    # Only the `limit` earliest deadlines are read: the index holds every open referral.
    for key, _value in ctx.range("due/", limit=limit):
        deadline = int(key[4:19])
        if deadline >= ctx.block_time:
            break
        ref = ctx.get("referral/" + key[20:])
        if ref is None or not _awaiting_answer(ref["status"]):
            ctx.delete(key)
            continue
        _fail(ctx, ref)
        failed.append(ref["id"])
    return {"failed": failed}


# -- queries --------------------------------------------------------------------------


def get(ctx, referral_id):
    """A referral with its effective status: for its parties, the patient and (without
    the encrypted fields) the regulator."""
    me = _member(ctx, ("doctor", "patient", "regulator"))
    ref = _load(ctx, referral_id)
    ref["status"] = _effective_status(ctx, ref)
    if me["role"] == "regulator":
        # Records written by an earlier version of this contract held the sealed fields.
        for field in ENCRYPTED_FIELDS:
            ref.pop(field, None)
        for signature in ref["signatures"].values():
            signature.pop("opinion_enc", None)
        return ref
    if me["role"] == "patient":
        if me["pseudonym"] != ref["patient"]:
            raise PermissionDenied("a patient sees only their own referrals")
        return _with_sealed(ctx, ref)
    identity = ctx.caller.identity
    in_target = me["institution"] == ref["target_institution"]
    in_target = in_target and me["department"] == ref["target_department"]
    if identity == ref["requester"] or in_target or identity in ref["mdt_members"]:
        return _with_sealed(ctx, ref)
    raise PermissionDenied("a referral is visible to its parties, patient and regulator")


def inbox(ctx, department, limit=100):
    """Referrals addressed to a department of the caller's institution (its doctors and
    its admin): id, kind, effective status, deadline."""
    me = _member(ctx, ("doctor", "institution"))
    _check_id(department, "department")
    if me["role"] == "doctor" and me["department"] != department:
        raise PermissionDenied("a doctor sees the inbox of their own department")
    prefix = "inbox/" + me["institution"] + "/" + department + "/"
    out = []
    for key, _value in ctx.range(prefix):
        if len(out) >= limit:
            break
        ref = ctx.get("referral/" + key[len(prefix) :])
        item = {"id": ref["id"], "kind": ref["kind"], "status": _effective_status(ctx, ref)}
        item["deadline"] = ref["deadline"]
        out.append(item)
    return out


def followups(ctx, referral_id):
    """Follow-up entries of a referral, for its parties and the patient."""
    get(ctx, referral_id)
    if ctx.caller.role == "regulator":
        raise PermissionDenied("follow-up notes are for the parties; audit.trace_referral")
    return [value for _key, value in ctx.range("followup/" + referral_id + "/")]

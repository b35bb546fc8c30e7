"""consent: a patient's (or a record owner's) grants of access to records (DESIGN §6).

A grant names a grantee (a certificate identity, or `institution:<id>` for the doctors
of one institution), the records it covers (a list of record ids, or "*" for all of the
patient's records: only the patient may grant "*"), a purpose and an expiry. The
granter's client wraps the data key for the grantee into the owning vault; `revoke`
stops the next access (records.access reads the grant) and the `consent_revoked`
event makes the vault drop the wrapped key. `referral.create` names a grant as the
patient's consent to a referral.

State keys:
    grant/<grant_id>                       {id, patient, grantee, records, purpose,
                                            expires_at, granted_by, status, ...}
    by_patient/<pseudonym>/<grant_id>      1
    by_grantee/<grantee>/<grant_id>        1
    record_grants/<record_id>              [grant ids naming the record]   (read by records)
    patient_grants/<pseudonym>             [grant ids of "*" grants]       (read by records)
    stats                                  {grants, revocations}
    hist/<kind>/<id>/<seq:8>, histn/<kind>/<id>   kind: grant, record, patient
"""

# ruff: noqa: F821 -- PermissionDenied is a builtin of the contract sandbox (README).

DEPENDENCIES = ("consortium", "records")

PURPOSES = frozenset({"treatment", "referral", "consultation", "mdt", "follow-up", "research"})
MAX_ID = 128
MAX_RECORDS = 100
MAX_TERM_MS = 158_112_000_000  # five years of 366 days
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"
HEX = "0123456789abcdef"


def _check_id(value, what):
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise ValueError(f"{what} must be a string of 1 to {MAX_ID} characters")
    if not all(ch in ID_CHARS for ch in value):
        raise ValueError(f"{what} {value!r} may only hold letters, digits and '-_.:'")


def _pad(n):
    return ("00000000" + str(n))[-8:]


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


def _log(ctx, kind, obj, action, detail):
    count_key = "histn/" + kind + "/" + obj
    n = ctx.get(count_key) or 0
    entry = {
        "seq": n,
        "height": ctx.height,
        "time": ctx.block_time,
        "tx": ctx.tx_id,
        "contract": "consent",
        "action": action,
        "actor": ctx.caller.identity,
        "actor_role": ctx.caller.role,
        "actor_institution": ctx.caller.institution,
        "detail": detail,
    }
    ctx.put("hist/" + kind + "/" + obj + "/" + _pad(n), entry)
    ctx.put(count_key, n + 1)


def _bump(ctx, field):
    stats = ctx.get("stats") or {"grants": 0, "revocations": 0}
    stats[field] = stats[field] + 1
    ctx.put("stats", stats)


def _append(ctx, key, grant_id):
    ids = ctx.get(key) or []
    ids.append(grant_id)
    ctx.put(key, ids)


def _check_grantee(ctx, grantee):
    if not isinstance(grantee, str):
        raise ValueError("grantee must be an identity or 'institution:<id>'")
    if grantee.startswith("institution:"):
        inst = ctx.get_from("consortium", "institution/" + grantee[len("institution:") :])
        if inst is None or inst["status"] != "active" or inst["tier"] == "authority":
            raise ValueError(f"grantee {grantee!r} is not an active care institution")
        return
    if len(grantee) != 64 or not all(ch in HEX for ch in grantee):
        raise ValueError("grantee must be a 64-hex identity or 'institution:<id>'")
    regulator = ctx.get_from("consortium", "role/regulator")
    if regulator is not None and regulator["identity"] == grantee:
        raise PermissionDenied("the regulator never receives access to record contents")
    who = ctx.get_from("consortium", "identity/" + grantee)
    if who is None or who["status"] != "active":
        raise ValueError("grantee is not a registered, active identity")


def _covered_patient(ctx, me, records):
    """The patient the grant is about, after checking the caller may grant `records`."""
    if me["role"] == "patient":
        if records == "*":
            return me["pseudonym"]
        owner_needed = ""
    else:
        if records == "*":
            raise PermissionDenied("only the patient may grant access to all their records")
        owner_needed = ctx.caller.identity
    if not isinstance(records, list) or not 0 < len(records) <= MAX_RECORDS:
        raise ValueError(f"records must be '*' or a list of 1 to {MAX_RECORDS} record ids")
    patient = me.get("pseudonym", "")
    for record_id in records:
        _check_id(record_id, "record id")
        record = ctx.get_from("records", "record/" + record_id)
        if record is None or record["status"] != "active":
            raise ValueError(f"record {record_id!r} does not exist or is erased")
        if owner_needed and record["owner"] != owner_needed:
            raise PermissionDenied(f"caller does not own record {record_id!r}")
        if not patient:
            patient = record["patient"]
        if record["patient"] != patient:
            raise ValueError(
                "all records of a grant must belong to one patient (and to the caller)"
            )
    return patient


def grant(ctx, grantee, records, purpose, expires_at, grant_id=""):
    """Grants `grantee` access to `records` for `purpose` until `expires_at` (Unix ms).
    The id defaults to "g" + the first 24 hex digits of the transaction id."""
    me = _member(ctx, ("patient", "doctor"))
    if not grant_id:
        grant_id = "g" + ctx.tx_id[:24]
    _check_id(grant_id, "grant_id")
    if ctx.get("grant/" + grant_id) is not None:
        raise ValueError(f"grant {grant_id!r} already exists")
    _check_grantee(ctx, grantee)
    if grantee == ctx.caller.identity:
        raise ValueError("a grant to oneself is not needed")
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {sorted(PURPOSES)}")
    if not isinstance(expires_at, int) or isinstance(expires_at, bool):
        raise ValueError("expires_at must be a Unix time in milliseconds")
    if not ctx.block_time < expires_at <= ctx.block_time + MAX_TERM_MS:
        raise ValueError("expires_at must be in the future and at most five years away")
    patient = _covered_patient(ctx, me, records)
    record = {
        "id": grant_id,
        "patient": patient,
        "grantee": grantee,
        "records": records,
        "purpose": purpose,
        "expires_at": expires_at,
        "granted_by": ctx.caller.identity,
        "granted_by_role": me["role"],
        "granted_at": ctx.block_time,
        "status": "active",
    }
    ctx.put("grant/" + grant_id, record)
    ctx.put("by_patient/" + patient + "/" + grant_id, 1)
    ctx.put("by_grantee/" + grantee + "/" + grant_id, 1)
    detail = {"grant": grant_id, "grantee": grantee, "purpose": purpose, "expires_at": expires_at}
    _log(ctx, "grant", grant_id, "grant", detail)
    _log(ctx, "patient", patient, "consent_grant", detail)
    if records == "*":
        _append(ctx, "patient_grants/" + patient, grant_id)
    else:
        for record_id in records:
            _append(ctx, "record_grants/" + record_id, grant_id)
            _log(ctx, "record", record_id, "consent_grant", detail)
    _bump(ctx, "grants")
    event = {"grant": grant_id, "grantee": grantee, "records": records, "patient": patient}
    ctx.emit("consent_granted", event)
    return record


def revoke(ctx, grant_id):
    """Revokes a grant (the patient, or whoever granted it); the next access fails."""
    me = _member(ctx, ("patient", "doctor"))
    _check_id(grant_id, "grant_id")
    record = ctx.get("grant/" + grant_id)
    if record is None:
        raise ValueError(f"no grant {grant_id!r}")
    is_patient = me["role"] == "patient" and me["pseudonym"] == record["patient"]
    if not is_patient and record["granted_by"] != ctx.caller.identity:
        raise PermissionDenied("only the patient or the granter may revoke a grant")
    if record["status"] != "active":
        raise ValueError(f"grant {grant_id!r} is already {record['status']}")
    record["status"] = "revoked"
    record["revoked_by"] = ctx.caller.identity
    record["revoked_at"] = ctx.block_time
    ctx.put("grant/" + grant_id, record)
    detail = {"grant": grant_id, "grantee": record["grantee"]}
    _log(ctx, "grant", grant_id, "revoke", detail)
    _log(ctx, "patient", record["patient"], "consent_revoke", detail)
    if record["records"] != "*":
        for record_id in record["records"]:
            _log(ctx, "record", record_id, "consent_revoke", detail)
    _bump(ctx, "revocations")
    event = {"grant": grant_id, "grantee": record["grantee"], "patient": record["patient"]}
    ctx.emit("consent_revoked", event)
    return record


def get(ctx, grant_id):
    """A grant, for its patient, granter, grantee (or a doctor of a grantee institution)
    and the regulator."""
    me = _member(ctx, ("patient", "doctor", "regulator"))
    _check_id(grant_id, "grant_id")
    record = ctx.get("grant/" + grant_id)
    if record is None:
        return None
    if me["role"] == "regulator" or ctx.caller.identity in (
        record["granted_by"],
        record["grantee"],
    ):
        return record
    if me["role"] == "patient" and me["pseudonym"] == record["patient"]:
        return record
    if me["role"] == "doctor" and record["grantee"] == "institution:" + me["institution"]:
        return record
    raise PermissionDenied("a grant is visible to its patient, granter, grantee and regulator")


def list_for_patient(ctx, patient, limit=100):
    me = _member(ctx, ("patient", "regulator"))
    _check_id(patient, "patient")
    if me["role"] == "patient" and me["pseudonym"] != patient:
        raise PermissionDenied("a patient lists only their own grants")
    prefix = "by_patient/" + patient + "/"
    return [key[len(prefix) :] for key, _value in ctx.range(prefix)][:limit]


def list_for_grantee(ctx, limit=100):
    """Grants naming the caller, or (for a doctor) its institution."""
    me = _member(ctx, ("patient", "doctor"))
    out = []
    prefixes = ["by_grantee/" + ctx.caller.identity + "/"]
    if me["role"] == "doctor":
        prefixes.append("by_grantee/institution:" + me["institution"] + "/")
    for prefix in prefixes:
        for key, _value in ctx.range(prefix):
            out.append(key[len(prefix) :])
    return out[:limit]

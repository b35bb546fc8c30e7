"""consortium: who is in the consortium and what they may do (DESIGN §2, §6).

Institutions (admitted and suspended by the leader), their departments, doctors and
patients (registered by the institution's admin), revocation of identities, and the
encryption-key registry (each identity's HPKE public key, rotatable, with history).

State keys (this contract's namespace; other contracts read them with `get_from`):

    institution/<inst>                 {id, name, tier, region, status, ...}   (genesis + leader)
    role/leader, role/regulator        {identity}                              (genesis)
    node/<name>                        {name, institution, consenter, peer_id} (genesis)
    department/<inst>/<dept>           {institution, id, name, accepts_referrals, ...}
    identity/<identity>                doctor: {role, institution, name, department, status}
                                       patient: {role, institution, pseudonym, status}
    dept_doctor/<inst>/<dept>/<identity>   1   (index: doctors of a department)
    patient/<pseudonym>                {pseudonym, identity, institution, registered_at}
    revoked/<identity>                 {identity, by, reason, at}   (the node reads this key)
    enckey/<identity>                  current key {identity, version, public_key, suite, ...}
    enckey_history/<identity>/<version:8>  every version ever registered
    hist/<kind>/<id>/<seq:8>, histn/<kind>/<id>   append-only history (kind: patient,
                                       identity, institution), read by `audit`

`contract/*` and `proposal/*` belong to the node's native contract lifecycle: never
written here. Contracts cannot do cryptography: the key signature is stored as given and
verified by clients (SDK) against the identity's certificate.
"""

# ruff: noqa: F821 -- PermissionDenied is a builtin of the contract sandbox (README).

TIERS = frozenset({"primary", "secondary", "tertiary", "authority"})
KEY_SUITES = frozenset({"MLKEM768-X25519", "X25519"})
MAX_ID = 64
MAX_NAME = 128
MAX_KEY_TEXT = 8192
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
HEX = "0123456789abcdef"
DIGITS = "0123456789"


# -- validation -----------------------------------------------------------------------


def _check_id(value, what):
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise ValueError(f"{what} must be a string of 1 to {MAX_ID} characters")
    if not all(ch in ID_CHARS for ch in value):
        raise ValueError(f"{what} {value!r} may only hold letters, digits, '-', '_' and '.'")


def _check_identity(value):
    if not isinstance(value, str) or len(value) != 64 or not all(ch in HEX for ch in value):
        raise ValueError("identity must be the 64-character lowercase hex SHA-256 of a certificate")


def _check_text(value, what, limit):
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ValueError(f"{what} must be a non-empty string of at most {limit} characters")


def _check_pseudonym(value):
    """Pseudonyms only: refuse what looks like a name or a national id number."""
    if not isinstance(value, str) or not 8 <= len(value) <= MAX_ID:
        raise ValueError("pseudonym must be 8 to 64 characters")
    if not all(ch in ID_CHARS for ch in value):
        raise ValueError("pseudonym may only hold ASCII letters, digits, '-', '_' and '.'")
    body = value[:-1] if value[-1] in "xX" else value
    if all(ch in DIGITS for ch in body):
        raise ValueError("pseudonym looks like an id number; use the consortium pseudonym")


def _pad(n):
    return ("00000000" + str(n))[-8:]


# -- who is calling -------------------------------------------------------------------


def _is_leader(ctx):
    role = ctx.get("role/leader")
    return (
        ctx.caller.role == "leader" and role is not None and role["identity"] == ctx.caller.identity
    )


def _require_leader(ctx):
    if not _is_leader(ctx):
        raise PermissionDenied("only the consortium leader may do this")


def _active_institution(ctx, institution):
    inst = ctx.get("institution/" + institution)
    if inst is None:
        raise PermissionDenied(f"institution {institution!r} is not a consortium member")
    if inst["status"] != "active":
        raise PermissionDenied(f"institution {institution!r} is {inst['status']}")
    return inst


def _require_admin(ctx):
    """An institution admin (OU=institution) of an active institution, not revoked."""
    if ctx.caller.role != "institution":
        raise PermissionDenied("only an institution's admin may do this")
    if ctx.get("revoked/" + ctx.caller.identity) is not None:
        raise PermissionDenied("caller's certificate is revoked")
    _active_institution(ctx, ctx.caller.institution)
    return ctx.caller.institution


def _known_caller(ctx):
    """Any identity the consortium knows and has not revoked; returns its description."""
    caller = ctx.caller
    if ctx.get("revoked/" + caller.identity) is not None:
        raise PermissionDenied("caller's certificate is revoked")
    if caller.role in ("leader", "regulator"):
        role = ctx.get("role/" + caller.role)
        if role is None or role["identity"] != caller.identity:
            raise PermissionDenied(f"caller is not the consortium's {caller.role}")
        return {"role": caller.role}
    if caller.role == "node":
        return {"role": "node", "institution": caller.institution}
    _active_institution(ctx, caller.institution)
    if caller.role == "institution":
        return {"role": "institution", "institution": caller.institution}
    me = ctx.get("identity/" + caller.identity)
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
        "contract": "consortium",
        "action": action,
        "actor": ctx.caller.identity,
        "actor_role": ctx.caller.role,
        "actor_institution": ctx.caller.institution,
        "detail": detail,
    }
    ctx.put("hist/" + kind + "/" + obj + "/" + _pad(n), entry)
    ctx.put(count_key, n + 1)


# -- institutions (leader) ------------------------------------------------------------


def admit_institution(ctx, institution, name, tier, region):
    """Admits a new member (or re-admits a suspended one with new details). The node
    must add its CA certificate before its members' certificates are accepted."""
    _require_leader(ctx)
    _check_id(institution, "institution")
    _check_text(name, "name", MAX_NAME)
    _check_text(region, "region", MAX_NAME)
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {sorted(TIERS)}")
    previous = ctx.get("institution/" + institution)
    if previous is not None and previous["status"] == "active":
        raise ValueError(f"institution {institution!r} is already an active member")
    record = {
        "id": institution,
        "name": name,
        "tier": tier,
        "region": region,
        "status": "active",
        "admitted_at": ctx.block_time,
    }
    ctx.put("institution/" + institution, record)
    _log(ctx, "institution", institution, "admit", {"tier": tier, "region": region})
    ctx.emit("institution_admitted", {"institution": institution, "tier": tier, "region": region})
    return record


def _set_status(ctx, institution, status, reason):
    _require_leader(ctx)
    _check_id(institution, "institution")
    record = ctx.get("institution/" + institution)
    if record is None:
        raise ValueError(f"no institution {institution!r}")
    if record["status"] == status:
        raise ValueError(f"institution {institution!r} is already {status}")
    record["status"] = status
    record["status_changed_at"] = ctx.block_time
    ctx.put("institution/" + institution, record)
    _log(ctx, "institution", institution, status, {"reason": reason})
    ctx.emit("institution_" + status, {"institution": institution})
    return record


def suspend_institution(ctx, institution, reason=""):
    """Its admin, doctors and patients can do nothing until it is reinstated."""
    _check_text(reason or "-", "reason", MAX_NAME)
    return _set_status(ctx, institution, "suspended", reason)


def reinstate_institution(ctx, institution):
    return _set_status(ctx, institution, "active", "")


# -- departments, doctors, patients (institution admin) -------------------------------


def register_department(ctx, department, name, accepts_referrals=True):
    """Creates or updates a department of the caller's institution. Use an opaque code
    as `department` (e.g. "d07"): it is the routing key of referrals and is public."""
    inst = _require_admin(ctx)
    _check_id(department, "department")
    _check_text(name, "name", MAX_NAME)
    if not isinstance(accepts_referrals, bool):
        raise ValueError("accepts_referrals must be true or false")
    key = "department/" + inst + "/" + department
    created = ctx.get(key) is None
    record = {
        "institution": inst,
        "id": department,
        "name": name,
        "accepts_referrals": accepts_referrals,
        "updated_at": ctx.block_time,
    }
    ctx.put(key, record)
    ctx.emit("department_registered", {"institution": inst, "department": department})
    return {"department": record, "created": created}


def register_doctor(ctx, identity, name, department):
    """Binds a doctor's certificate identity to the caller's institution and a department;
    calling it again for the same doctor moves them to another department."""
    inst = _require_admin(ctx)
    _check_identity(identity)
    _check_text(name, "name", MAX_NAME)
    _check_id(department, "department")
    if ctx.get("department/" + inst + "/" + department) is None:
        raise ValueError(f"no department {department!r} in {inst!r}; register it first")
    if ctx.get("revoked/" + identity) is not None:
        raise ValueError("that identity is revoked")
    previous = ctx.get("identity/" + identity)
    if previous is not None:
        if previous["role"] != "doctor" or previous["institution"] != inst:
            raise PermissionDenied("that identity is registered to another role or institution")
        ctx.delete("dept_doctor/" + inst + "/" + previous["department"] + "/" + identity)
    record = {
        "identity": identity,
        "role": "doctor",
        "institution": inst,
        "name": name,
        "department": department,
        "status": "active",
        "registered_at": ctx.block_time,
    }
    ctx.put("identity/" + identity, record)
    ctx.put("dept_doctor/" + inst + "/" + department + "/" + identity, 1)
    _log(ctx, "identity", identity, "register_doctor", {"department": department})
    ctx.emit("doctor_registered", {"identity": identity, "institution": inst})
    return record


def register_patient(ctx, identity, pseudonym):
    """Binds a patient's certificate identity to a consortium pseudonym (never a name or
    a national id number: the chain keeps no direct identifier)."""
    inst = _require_admin(ctx)
    _check_identity(identity)
    _check_pseudonym(pseudonym)
    if ctx.get("revoked/" + identity) is not None:
        raise ValueError("that identity is revoked")
    if ctx.get("identity/" + identity) is not None:
        raise ValueError("that identity is already registered")
    if ctx.get("patient/" + pseudonym) is not None:
        raise ValueError(f"pseudonym {pseudonym!r} is taken")
    record = {
        "identity": identity,
        "role": "patient",
        "institution": inst,
        "pseudonym": pseudonym,
        "status": "active",
        "registered_at": ctx.block_time,
    }
    ctx.put("identity/" + identity, record)
    ctx.put(
        "patient/" + pseudonym,
        {
            "pseudonym": pseudonym,
            "identity": identity,
            "institution": inst,
            "registered_at": ctx.block_time,
        },
    )
    _log(ctx, "patient", pseudonym, "register", {"institution": inst})
    _log(ctx, "identity", identity, "register_patient", {})
    return record


# -- revocation -----------------------------------------------------------------------


def revoke(ctx, identity, reason=""):
    """Revokes a certificate identity from the next block on (the node reads
    `revoked/<identity>`). The leader may revoke anyone but the leader and regulator;
    an institution admin only identities registered to its institution."""
    _check_identity(identity)
    if reason:
        _check_text(reason, "reason", MAX_NAME)
    registered = ctx.get("identity/" + identity)
    if not _is_leader(ctx):
        inst = _require_admin(ctx)
        if registered is None or registered["institution"] != inst:
            raise PermissionDenied("an admin may only revoke identities of its own institution")
    for role in ("leader", "regulator"):
        holder = ctx.get("role/" + role)
        if holder is not None and holder["identity"] == identity:
            raise PermissionDenied(f"the {role} identity cannot be revoked by a transaction")
    if ctx.get("revoked/" + identity) is not None:
        raise ValueError("identity is already revoked")
    record = {
        "identity": identity,
        "by": ctx.caller.identity,
        "reason": reason,
        "at": ctx.block_time,
    }
    ctx.put("revoked/" + identity, record)
    if registered is not None:
        registered["status"] = "revoked"
        ctx.put("identity/" + identity, registered)
        if registered["role"] == "doctor":
            index = "dept_doctor/" + registered["institution"] + "/" + registered["department"]
            ctx.delete(index + "/" + identity)
    _log(ctx, "identity", identity, "revoke", {"reason": reason})
    ctx.emit("identity_revoked", {"identity": identity})
    return record


# -- encryption-key registry ----------------------------------------------------------


def _check_key_args(public_key, suite, signature, certificate):
    _check_text(public_key, "public_key", MAX_KEY_TEXT)
    _check_text(signature, "signature", MAX_KEY_TEXT)
    if not isinstance(certificate, str) or len(certificate) > MAX_KEY_TEXT:
        raise ValueError(
            f"certificate must be base64 DER text of at most {MAX_KEY_TEXT} characters"
        )
    if suite not in KEY_SUITES:
        raise ValueError(f"suite must be one of {sorted(KEY_SUITES)}")


def _store_key(ctx, version, public_key, suite, signature, certificate):
    record = {
        "identity": ctx.caller.identity,
        "version": version,
        "public_key": public_key,
        "suite": suite,
        "signature": signature,
        "certificate": certificate,
        "registered_at": ctx.block_time,
    }
    ctx.put("enckey/" + ctx.caller.identity, record)
    ctx.put("enckey_history/" + ctx.caller.identity + "/" + _pad(version), record)
    _log(ctx, "identity", ctx.caller.identity, "key_v" + str(version), {"suite": suite})
    ctx.emit("key_registered", {"identity": ctx.caller.identity, "version": version})
    return record


def register_key(ctx, public_key, suite, signature, certificate=""):
    """The caller's first HPKE public key (base64 text), signed by its certificate key;
    `certificate` (base64 DER) lets any client check the signature (node/sdk/identity_keys)."""
    _known_caller(ctx)
    _check_key_args(public_key, suite, signature, certificate)
    if ctx.get("enckey/" + ctx.caller.identity) is not None:
        raise ValueError("a key is already registered for this identity; use rotate_key")
    return _store_key(ctx, 1, public_key, suite, signature, certificate)


def rotate_key(ctx, public_key, suite, signature, certificate=""):
    """A new key version for the caller; records stay owned by the identity."""
    _known_caller(ctx)
    _check_key_args(public_key, suite, signature, certificate)
    current = ctx.get("enckey/" + ctx.caller.identity)
    if current is None:
        raise ValueError("no key registered for this identity; use register_key")
    if current["public_key"] == public_key:
        raise ValueError("the new key is the current key")
    return _store_key(ctx, current["version"] + 1, public_key, suite, signature, certificate)


# -- queries --------------------------------------------------------------------------


def get_institution(ctx, institution):
    _check_id(institution, "institution")
    return ctx.get("institution/" + institution)


def get_department(ctx, institution, department):
    _check_id(institution, "institution")
    _check_id(department, "department")
    return ctx.get("department/" + institution + "/" + department)


def list_departments(ctx, institution):
    _check_id(institution, "institution")
    return [value for _key, value in ctx.range("department/" + institution + "/")]


def list_doctors(ctx, institution, department):
    """Identities of a department's doctors (whom a referring client wraps keys for)."""
    _known_caller(ctx)
    _check_id(institution, "institution")
    _check_id(department, "department")
    prefix = "dept_doctor/" + institution + "/" + department + "/"
    return [key[len(prefix) :] for key, _value in ctx.range(prefix)]


def get_identity(ctx, identity):
    _known_caller(ctx)
    _check_identity(identity)
    record = ctx.get("identity/" + identity)
    revoked = ctx.get("revoked/" + identity)
    return {"identity": identity, "registration": record, "revoked": revoked is not None}


def get_patient(ctx, pseudonym):
    """A patient's registration by pseudonym (its identity, to wrap record keys for)."""
    _known_caller(ctx)
    _check_pseudonym(pseudonym)
    return ctx.get("patient/" + pseudonym)


def get_key(ctx, identity, version=0):
    """The current key (version 0) or a given version of an identity's key."""
    _check_identity(identity)
    if not isinstance(version, int) or version < 0:
        raise ValueError("version must be a non-negative integer")
    if version == 0:
        return ctx.get("enckey/" + identity)
    return ctx.get("enckey_history/" + identity + "/" + _pad(version))


def key_history(ctx, identity):
    _check_identity(identity)
    return [value for _key, value in ctx.range("enckey_history/" + identity + "/")]


def is_revoked(ctx, identity):
    _check_identity(identity)
    return ctx.get("revoked/" + identity) is not None

"""records: on-chain metadata of patient records, recorded access, erasure (DESIGN §6).

The payload never comes here: the client encrypts it, the uploading hospital's vault
node stores ciphertext and wrapped keys, and this contract keeps only the fields of the
allow-list in docs/onchain-fields.md. A reader first commits `access` naming why it may
read (owner, the patient, a consent grant, or a referral); the owning node serves the
ciphertext only after that transaction is committed.

State keys:
    record/<record_id>                  the record's metadata (ALLOWED_FIELDS + status)
    by_patient/<pseudonym>/<record_id>  1
    by_owner/<owner identity>/<record_id>  1
    stats                               {records, accesses, erasures}
    hist/record/<record_id>/<seq:8>, histn/record/<record_id>    append-only history
    hist/patient/<pseudonym>/<seq:8>, histn/patient/<pseudonym>

Reads `consortium` (members), `consent` (grants) and `referral` (a referral grants the
target department access to the records it lists): the read dependency on `referral`
is circular with referral's on `records`, which is fine for reads.
"""

# ruff: noqa: F821 -- PermissionDenied is a builtin of the contract sandbox (README).

DEPENDENCIES = ("consortium", "consent", "referral")

ALLOWED_FIELDS = (
    "id",
    "owner",
    "owner_institution",
    "patient",
    "content_hash",
    "size",
    "media_type",
    "vault_node",
)
MAX_ID = 128
MAX_SIZE = 1_099_511_627_776  # 1 TiB
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"
HEX = "0123456789abcdef"
MEDIA_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-+./"
REFERRAL_READABLE = frozenset({"requested", "received", "accepted", "in-progress", "completed"})
MDT_READABLE = frozenset({"accepted", "in-progress", "completed"})


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
        "contract": "records",
        "action": action,
        "actor": ctx.caller.identity,
        "actor_role": ctx.caller.role,
        "actor_institution": ctx.caller.institution,
        "detail": detail,
    }
    ctx.put("hist/" + kind + "/" + obj + "/" + _pad(n), entry)
    ctx.put(count_key, n + 1)


def _bump(ctx, field):
    stats = ctx.get("stats") or {"records": 0, "accesses": 0, "erasures": 0}
    stats[field] = stats[field] + 1
    ctx.put("stats", stats)


def _load(ctx, record_id):
    _check_id(record_id, "record_id")
    record = ctx.get("record/" + record_id)
    if record is None:
        raise ValueError(f"no record {record_id!r}")
    return record


def _is_patient(ctx, me, record):
    return me.get("role") == "patient" and me.get("pseudonym") == record["patient"]


def put(ctx, record_id, patient, content_hash, size, media_type, vault_node):
    """Registers a record uploaded by the calling doctor, who becomes its owner."""
    me = _member(ctx, ("doctor",))
    _check_id(record_id, "record_id")
    _check_id(patient, "patient")
    if ctx.get_from("consortium", "patient/" + patient) is None:
        raise ValueError(f"no registered patient with pseudonym {patient!r}")
    if not isinstance(content_hash, str) or len(content_hash) != 64:
        raise ValueError("content_hash must be 64 lowercase hex characters (SHA-256 root)")
    if not all(ch in HEX for ch in content_hash):
        raise ValueError("content_hash must be 64 lowercase hex characters (SHA-256 root)")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise ValueError("size must be an integer number of bytes")
    if not isinstance(media_type, str) or not 3 <= len(media_type) <= 100:
        raise ValueError("media_type must be a MIME type such as application/fhir+json")
    if media_type.count("/") != 1 or not all(ch in MEDIA_CHARS for ch in media_type):
        raise ValueError("media_type must be a lowercase MIME type such as application/fhir+json")
    _check_id(vault_node, "vault_node")
    node = ctx.get_from("consortium", "node/" + vault_node)
    if node is None or node["institution"] != me["institution"]:
        raise ValueError(f"vault_node {vault_node!r} is not a node of {me['institution']!r}")
    if ctx.get("record/" + record_id) is not None:
        raise ValueError(f"record {record_id!r} already exists")
    record = {
        "id": record_id,
        "owner": ctx.caller.identity,
        "owner_institution": me["institution"],
        "patient": patient,
        "content_hash": content_hash,
        "size": size,
        "media_type": media_type,
        "vault_node": vault_node,
        "created_at": ctx.block_time,
        "status": "active",
    }
    ctx.put("record/" + record_id, record)
    ctx.put("by_patient/" + patient + "/" + record_id, 1)
    ctx.put("by_owner/" + ctx.caller.identity + "/" + record_id, 1)
    detail = {"record": record_id, "institution": me["institution"], "media_type": media_type}
    _log(ctx, "record", record_id, "put", detail)
    _log(ctx, "patient", patient, "record_put", detail)
    _bump(ctx, "records")
    event = {"record": record_id, "owner": ctx.caller.identity, "patient": patient}
    event["institution"] = me["institution"]
    ctx.emit("record_put", event)
    return record


def _grant_allows(ctx, me, record, grant_id):
    _check_id(grant_id, "grant")
    grant = ctx.get_from("consent", "grant/" + grant_id)
    if grant is None:
        return "no such consent grant"
    if grant["status"] != "active":
        return "the consent grant was revoked"
    if ctx.block_time >= grant["expires_at"]:
        return "the consent grant has expired"
    if grant["patient"] != record["patient"]:
        return "the consent grant is for another patient"
    if grant["records"] != "*" and record["id"] not in grant["records"]:
        return "the consent grant does not cover this record"
    grantee = grant["grantee"]
    if grantee == ctx.caller.identity:
        return ""
    if me.get("role") == "doctor" and grantee == "institution:" + me["institution"]:
        return ""
    return "the consent grant names another grantee"


def _referral_allows(ctx, me, record, referral_id):
    _check_id(referral_id, "referral")
    ref = ctx.get_from("referral", "referral/" + referral_id)
    if ref is None:
        return "no such referral"
    status = ref["status"]
    if status in ("requested", "received") and ctx.block_time > ref["deadline"]:
        status = "failed"
    if status not in REFERRAL_READABLE:
        return "the referral is " + status
    if record["id"] not in ref["records"]:
        return "the referral does not list this record"
    if me.get("role") != "doctor":
        return "only doctors read through a referral"
    in_target = me["institution"] == ref["target_institution"]
    if in_target and me["department"] == ref["target_department"]:
        return ""
    if ctx.caller.identity in ref["mdt_members"] and status in MDT_READABLE:
        return ""
    return "caller is not a doctor of the referral's target department or its MDT"


def access(ctx, record_id, grant="", referral=""):
    """Records a read. The owner and the patient read without naming anything; anyone
    else names a consent `grant` id or a `referral` id that covers them. The owning
    node serves ciphertext and the caller's wrapped key only after this commits."""
    me = _member(ctx, ("doctor", "patient"))
    record = _load(ctx, record_id)
    if record["status"] != "active":
        raise ValueError(f"record {record_id!r} is {record['status']}")
    basis = ""
    if ctx.caller.identity == record["owner"]:
        basis = "owner"
    elif _is_patient(ctx, me, record):
        basis = "patient"
    elif grant:
        problem = _grant_allows(ctx, me, record, grant)
        if problem:
            raise PermissionDenied(problem)
        basis = "grant:" + grant
    elif referral:
        problem = _referral_allows(ctx, me, record, referral)
        if problem:
            raise PermissionDenied(problem)
        basis = "referral:" + referral
    else:
        raise PermissionDenied("name a consent grant or a referral that covers this record")
    detail = {"record": record_id, "reader": ctx.caller.identity, "basis": basis}
    _log(ctx, "record", record_id, "access", detail)
    _log(ctx, "patient", record["patient"], "record_access", detail)
    _bump(ctx, "accesses")
    ctx.emit(
        "access",
        {
            "record": record_id,
            "reader": ctx.caller.identity,
            "basis": basis,
            "vault_node": record["vault_node"],
            "content_hash": record["content_hash"],
            "institution": record["owner_institution"],
            "patient": record["patient"],
        },
    )
    result = {key: record[key] for key in ALLOWED_FIELDS}
    result["basis"] = basis
    return result


def request_erasure(ctx, record_id, reason=""):
    """The patient asks for erasure; the owning institution's admin confirms with `erase`."""
    me = _member(ctx, ("patient",))
    record = _load(ctx, record_id)
    if not _is_patient(ctx, me, record):
        raise PermissionDenied("only the record's patient may request its erasure")
    if record["status"] != "active":
        raise ValueError(f"record {record_id!r} is {record['status']}")
    if not isinstance(reason, str) or len(reason) > 256:
        raise ValueError("reason must be a string of at most 256 characters")
    record["erasure_requested_at"] = ctx.block_time
    ctx.put("record/" + record_id, record)
    _log(ctx, "record", record_id, "erasure_requested", {"record": record_id})
    _log(ctx, "patient", record["patient"], "erasure_requested", {"record": record_id})
    ctx.emit("erasure_requested", {"record": record_id, "institution": record["owner_institution"]})
    return record


def erase(ctx, record_id):
    """Marks the record erased; every node deletes its ciphertext and wrapped keys on the
    `erase` event (crypto-shredding). Allowed to the owner, or to the owning
    institution's admin confirming the patient's `request_erasure`."""
    me = _member(ctx, ("doctor", "institution"))
    record = _load(ctx, record_id)
    if record["status"] != "active":
        raise ValueError(f"record {record_id!r} is already {record['status']}")
    if ctx.caller.identity == record["owner"]:
        basis = "owner"
    elif me["role"] == "institution" and me["institution"] == record["owner_institution"]:
        if record.get("erasure_requested_at") is None:
            raise PermissionDenied("the admin may erase only after the patient requested it")
        basis = "patient_request"
    else:
        raise PermissionDenied("only the owner, or its institution on the patient's request")
    record["status"] = "erased"
    record["erased_at"] = ctx.block_time
    ctx.put("record/" + record_id, record)
    detail = {"record": record_id, "basis": basis}
    _log(ctx, "record", record_id, "erase", detail)
    _log(ctx, "patient", record["patient"], "record_erase", detail)
    _bump(ctx, "erasures")
    ctx.emit(
        "erase",
        {
            "record": record_id,
            "content_hash": record["content_hash"],
            "vault_node": record["vault_node"],
            "institution": record["owner_institution"],
            "patient": record["patient"],
        },
    )
    return record


def get(ctx, record_id):
    """Metadata: for the owner, the patient, the regulator and the owning institution."""
    me = _member(ctx, ("doctor", "patient", "institution", "regulator"))
    record = _load(ctx, record_id)
    if me["role"] in ("doctor", "institution") and me["institution"] == record["owner_institution"]:
        return record
    if ctx.caller.identity == record["owner"] or me["role"] == "regulator":
        return record
    if _is_patient(ctx, me, record):
        return record
    raise PermissionDenied("record metadata is for its owner, patient, institution or regulator")


def grants(ctx, record_id):
    """The consent grants covering a record (naming it, or all the patient's records):
    grantee, by whom, purpose, expiry, status. For those who may `get` the record."""
    get(ctx, record_id)
    record = ctx.get("record/" + record_id)
    ids = ctx.get_from("consent", "record_grants/" + record_id) or []
    ids = ids + (ctx.get_from("consent", "patient_grants/" + record["patient"]) or [])
    out = []
    for grant_id in ids:
        grant = ctx.get_from("consent", "grant/" + grant_id)
        status = grant["status"]
        if status == "active" and ctx.block_time >= grant["expires_at"]:
            status = "expired"
        out.append(
            {
                "id": grant_id,
                "grantee": grant["grantee"],
                "granted_by": grant["granted_by"],
                "purpose": grant["purpose"],
                "expires_at": grant["expires_at"],
                "status": status,
            }
        )
    return out


def list_by_patient(ctx, patient, limit=100):
    """Record ids of a patient: all for the patient and the regulator; a doctor or admin
    sees those its institution owns."""
    me = _member(ctx, ("doctor", "patient", "institution", "regulator"))
    _check_id(patient, "patient")
    if me["role"] == "patient" and me["pseudonym"] != patient:
        raise PermissionDenied("a patient lists only their own records")
    out = []
    prefix = "by_patient/" + patient + "/"
    for key, _value in ctx.range(prefix):
        if len(out) >= limit:
            break
        record_id = key[len(prefix) :]
        if me["role"] in ("doctor", "institution"):
            record = ctx.get("record/" + record_id)
            if record["owner_institution"] != me["institution"]:
                continue
        out.append(record_id)
    return out

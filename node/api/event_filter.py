"""Which events a StreamEvents subscriber may see (DESIGN §6: gateway authorisation).

Events are metadata (ids, pseudonyms, institutions, statuses, never payloads), but a
hospital's systems still see only what concerns them: the leader and the regulator see
every event; an institution's admin, its doctors and its nodes see the events of their
institution or naming them; a patient sees the events about their own pseudonym.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from node.crypto.certs import Identity

INSTITUTION_KEYS = ("institution", "requester_institution", "target_institution")
IDENTITY_KEYS = ("identity", "owner", "reader", "requester", "grantee", "actor")
SEES_ALL = frozenset({"leader", "regulator"})


def event_filter(who: Identity, registration: dict[str, Any] | None) -> Callable[[bytes], bool]:
    """A predicate over an event's JSON data for the subscriber `who` (already checked
    like a query), with its on-chain registration (for a patient's pseudonym)."""
    if who.role in SEES_ALL:
        return lambda _data: True
    me = who.identity
    if who.role == "patient":
        pseudonym = (registration or {}).get("pseudonym")

        def patient_sees(data: bytes) -> bool:
            event = _decode(data)
            return (bool(pseudonym) and event.get("patient") == pseudonym) or _names(event, me)

        return patient_sees
    inst = who.institution

    def member_sees(data: bytes) -> bool:
        event = _decode(data)
        if any(event.get(key) == inst for key in INSTITUTION_KEYS):
            return True
        return event.get("grantee") == "institution:" + inst or _names(event, me)

    return member_sees


def _decode(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _names(event: dict[str, Any], identity: str) -> bool:
    return any(event.get(key) == identity for key in IDENTITY_KEYS)

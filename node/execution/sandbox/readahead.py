"""Predicting which state keys a call will read, so the host can send them with the batch.

A state read that misses the worker's cache costs a worker → host → worker round trip
(tens of µs: two context switches). Most contract reads are a fixed prefix plus an
argument or a caller field: `kv.put(key)` reads `kv/<key>`, a referral reads
`consent/grant/<patient>` and `consortium/identity/<caller.identity>`. The host learns
such templates from the read sets of earlier outcomes of the same contract function and
sends the predicted keys' values ahead.

Predictions only warm a cache of the host's state as it was before the batch (the worker
consults the batch's own writes first), so a wrong or missing prediction costs a lookup
or a round trip, never a different result: outcomes and gas do not depend on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from node.execution.types import Invocation

MAX_TEMPLATES_PER_FUNCTION = 16
MAX_VALUE_LENGTH = 256

# A template is (prefix, source): the key is prefix + the source's value for the call.
# Sources: "a:<arg name>", "c:<caller field>", or "" for a constant key (prefix is the key).
Template = tuple[str, str]
_CALLER_FIELDS = ("identity", "name", "role", "institution")


def _sources(invocation: Invocation) -> Iterable[tuple[str, str]]:
    for name, value in invocation.args.items():
        if isinstance(value, str) and 0 < len(value) <= MAX_VALUE_LENGTH:
            yield f"a:{name}", value
    caller = invocation.caller
    for field in _CALLER_FIELDS:
        yield f"c:{field}", str(getattr(caller, field))


class ReadAhead:
    """Learns read templates per (contract, function) and instantiates them for a call."""

    def __init__(self) -> None:
        self._templates: dict[tuple[str, str], list[Template]] = {}

    def predict(self, invocation: Invocation) -> list[str]:
        """Stored keys this call will probably read (always including `<contract>/<arg>`)."""
        own = invocation.contract + "/"
        keys = [
            own + value
            for value in invocation.args.values()
            if isinstance(value, str) and 0 < len(value) <= MAX_VALUE_LENGTH
        ]
        templates = self._templates.get((invocation.contract, invocation.function))
        if templates:
            values = dict(_sources(invocation))
            for prefix, source in templates:
                if not source:
                    keys.append(prefix)
                elif source in values:
                    keys.append(prefix + values[source])
        return keys

    def learn(self, invocation: Invocation, reads: Iterable[bytes]) -> None:
        """Remembers how each key read by this call was made from its arguments."""
        slot = (invocation.contract, invocation.function)
        templates = self._templates.setdefault(slot, [])
        if len(templates) >= MAX_TEMPLATES_PER_FUNCTION:
            return
        values = dict(_sources(invocation))
        for raw in reads:
            key = raw.decode()
            template = _template_for(key, values)
            if template not in templates:
                templates.append(template)
                if len(templates) >= MAX_TEMPLATES_PER_FUNCTION:
                    return


def _template_for(key: str, values: Mapping[str, Any]) -> Template:
    """The longest source value that ends `key` explains it; otherwise the key is constant."""
    best: Template = (key, "")
    best_length = 0
    for source, value in values.items():
        if len(value) > best_length and key.endswith(value) and "/" in key[: -len(value)]:
            best, best_length = (key[: -len(value)], source), len(value)
    return best

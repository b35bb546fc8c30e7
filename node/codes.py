"""Validation codes and transaction statuses, mirrored from `medledger.v1` as Python enums.

The numbers are the wire values of `medledger.v1.TxCode` / `TxStatus`; a test checks that
both sides list the same names with the same numbers.
"""

from __future__ import annotations

import enum


class TxCode(enum.IntEnum):
    VALID = 0
    MALFORMED = 1
    MISSING_FIELD = 2
    TOO_LARGE = 3
    WRONG_CHAIN = 4
    EXPIRED = 5
    NOT_YET_VALID = 6
    TTL_TOO_LONG = 7
    UNSUPPORTED_ALGORITHM = 8
    UNKNOWN_CREATOR = 9
    CREATOR_REVOKED = 10
    BAD_SIGNATURE = 11
    DUPLICATE_TXID = 12
    MEMPOOL_FULL = 13
    QUOTA_EXCEEDED = 14
    UNKNOWN_CONTRACT = 15
    UNKNOWN_FUNCTION = 16
    BAD_ARGUMENTS = 17
    PERMISSION_DENIED = 18
    CONTRACT_ERROR = 19
    OUT_OF_GAS = 20
    NOT_LEADER = 21
    SHUTTING_DOWN = 22
    INTERNAL = 23


class TxStatus(enum.IntEnum):
    TX_STATUS_UNSPECIFIED = 0
    PENDING = 1
    COMMITTED = 2
    INVALID = 3
    UNKNOWN = 4


# Admission refusals that say "not now" rather than "never": the client may retry the
# very same bytes later.
RETRYABLE_CODES = frozenset(
    {TxCode.MEMPOOL_FULL, TxCode.QUOTA_EXCEEDED, TxCode.NOT_LEADER, TxCode.SHUTTING_DOWN}
)

"""The HPKE (RFC 9180) suites a record key can be wrapped with.

The default is the hybrid ML-KEM-768 + X25519 KEM: records must stay secret for decades,
so a key wrapped today must survive a future quantum computer (harvest now, decrypt
later); X25519 keeps it safe if ML-KEM were broken. X25519 alone is the option for
clients that cannot carry 1.2 kB public keys. Both use HKDF-SHA256 and AES-256-GCM.
"""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hpke


class HpkeSuite(enum.Enum):
    """Values are the names written in key files and in the `consortium` contract's
    encryption-key registry (its KEY_SUITES); each fixes KEM, KDF and AEAD."""

    MLKEM768_X25519 = "MLKEM768-X25519"
    X25519 = "X25519"

    @property
    def description(self) -> str:
        return f"{self.value}/HKDF-SHA256/AES-256-GCM"

    @property
    def wire_id(self) -> int:
        """One byte naming the suite inside a wrapped key."""
        return _WIRE_IDS[self]

    @classmethod
    def from_wire_id(cls, value: int) -> HpkeSuite:
        for suite, wire in _WIRE_IDS.items():
            if wire == value:
                return suite
        raise ValueError(f"unknown HPKE suite id {value}")

    def hpke(self) -> hpke.Suite:
        return _SUITES[self]


DEFAULT_SUITE = HpkeSuite.MLKEM768_X25519

_WIRE_IDS = {HpkeSuite.X25519: 1, HpkeSuite.MLKEM768_X25519: 2}
_SUITES = {
    HpkeSuite.MLKEM768_X25519: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
    HpkeSuite.X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}

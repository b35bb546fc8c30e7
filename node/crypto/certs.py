"""X.509 identities: institution CAs issue certificates with O = institution, OU = role.

`CertificateAuthority.issue` is what `init-consortium` (and an institution's admin
tooling) uses; `IdentityVerifier` is what a node uses to turn a creator certificate into
a `Caller`, once per distinct certificate (results are cached by certificate hash, since
parsing and chain checks cost far more than one signature check).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.crypto.hashing import sha256
from node.crypto.keys import PrivateKey, PublicKey, algorithm_of

ROLES = frozenset({"leader", "institution", "doctor", "patient", "regulator", "node"})


@dataclass(frozen=True)
class Identity:
    """A verified certificate holder."""

    identity: str  # hex SHA-256 of the certificate DER
    name: str  # CN
    role: str  # OU
    institution: str  # O
    public_key: PublicKey
    algorithm: int
    not_before_ms: int
    not_after_ms: int


class CertificateError(Exception):
    """A certificate that is not a consortium identity; the message says why."""


def _name(common_name: str, institution: str, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, institution),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs without a separate digest.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass(frozen=True)
class CertificateAuthority:
    institution: str
    key: PrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(
        cls, institution: str, key: PrivateKey, now: dt.datetime, years: int = 10
    ) -> CertificateAuthority:
        name = _name(f"{institution} CA", institution, "ca")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, _hash_for(key))
        )
        return cls(institution, key, cert)

    def issue(
        self,
        common_name: str,
        role: str,
        public_key: PublicKey,
        now: dt.datetime,
        years: int = 5,
        tls_hosts: Iterable[str] = (),
    ) -> x509.Certificate:
        if role not in ROLES:
            raise CertificateError(f"unknown role {role!r}; roles are {sorted(ROLES)}")
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, self.institution, role))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        hosts = list(tls_hosts)
        if hosts:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        return builder.sign(self.key, _hash_for(self.key))


def _attr(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise CertificateError(f"certificate subject must hold exactly one {oid._name}")
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


class IdentityVerifier:
    """Checks creator certificates against the consortium's institution CAs."""

    def __init__(
        self,
        ca_certificates: dict[str, bytes],
        reserved_roles: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self._cas: dict[str, x509.Certificate] = {
            inst: x509.load_der_x509_certificate(der) for inst, der in ca_certificates.items()
        }
        # Roles any institution CA could otherwise mint for itself (leader, regulator,
        # node): only the listed identities (hex certificate hashes) may hold them.
        self._reserved = reserved_roles or {}
        self._cache: dict[bytes, Identity] = {}

    def identify(self, der: bytes) -> Identity:
        """Parse and chain-check a certificate (cached). Validity times are returned, not
        checked: whether a certificate is valid depends on the time of the caller's
        choosing (admission time, or block time at execution)."""
        key = sha256(der)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        identity = self._verify(der, key)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = identity
        return identity

    def _verify(self, der: bytes, digest: bytes) -> Identity:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise CertificateError(f"creator certificate does not parse: {exc}") from exc
        institution = _attr(cert, NameOID.ORGANIZATION_NAME)
        role = _attr(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)
        name = _attr(cert, NameOID.COMMON_NAME)
        ca = self._cas.get(institution)
        if ca is None:
            raise CertificateError(f"institution {institution!r} is not in the consortium")
        if role not in ROLES:
            raise CertificateError(f"certificate role {role!r} is not a consortium role")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no base
            raise CertificateError(
                f"certificate of {name!r} is not issued by the {institution} CA"
            ) from exc
        allowed = self._reserved.get(role)
        if allowed is not None and digest.hex() not in allowed:
            raise CertificateError(
                f"role {role!r} is reserved to identities named in the genesis block; "
                f"{name!r} is not one of them"
            )
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise CertificateError("only ECDSA P-256 and Ed25519 keys are accepted")
        try:
            algorithm = algorithm_of(public_key)
        except Exception as exc:
            raise CertificateError(str(exc)) from exc
        return Identity(
            identity=digest.hex(),
            name=name,
            role=role,
            institution=institution,
            public_key=public_key,
            algorithm=algorithm,
            not_before_ms=_ms(cert.not_valid_before_utc),
            not_after_ms=_ms(cert.not_valid_after_utc),
        )


def load_pem_certificate_der(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)

"""Types shared by the unit tests' fixtures (kept out of conftest.py, which pytest owns)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from node.crypto import keys
from node.crypto.certs import CertificateAuthority
from node.execution.sandbox import InProcessMeteredEngine
from node.execution.types import ContractEngine, ContractModule
from node.genesis import Genesis
from node.sdk.client import Identity


class TxFactory(Protocol):
    def __call__(
        self,
        identity: Identity | None = None,
        function: str = "put",
        args: Mapping[str, Any] | None = None,
        *,
        contract: str = "kv",
        now_ms: int | None = None,
        ttl_ms: int = 60_000,
        nonce: bytes | None = None,
        chain_id: bytes | None = None,
    ) -> bytes: ...


def institution_ca(consortium: Path, institution: str = "hosp1") -> CertificateAuthority:
    """The institution's CA as init-consortium left it under cas/<institution>/."""
    folder = consortium / "cas" / institution
    key = keys.load_private(folder / "ca.key.pem")
    cert = x509.load_pem_x509_certificate((folder / "ca.cert.pem").read_bytes())
    return CertificateAuthority(institution, key, cert)


def metered_engine(genesis: Genesis, contracts: tuple[str, ...] = ("kv",)) -> ContractEngine:
    """The sandbox's checked, metered engine in this process: the same code and gas as
    the sandbox workers, without starting processes (unit tests only). Only `contracts`
    of the genesis block are loaded: loading all built-ins costs 150 ms an engine."""
    engine = InProcessMeteredEngine()
    for code in genesis.config.contracts:
        if code.name in contracts:
            engine.load(
                ContractModule(
                    code.name,
                    code.source,
                    code.code_hash,
                    code.engine_version,
                    tuple(code.dependencies),
                )
            )
    return engine

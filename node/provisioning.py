"""`medledger init-consortium`: CAs, node keys, demo identities, configs, genesis block.

Layout written under OUT (DESIGN §8):
    genesis.block
    ca-bundle.pem                      every institution CA certificate (for TLS clients)
    cas/<institution>/ca.key.pem       the institution CA's key (keep it offline)
    nodes/<name>/config.toml, node.key.pem, node.cert.pem, p2p.key
    identities/<name>/key.pem, cert.pem, enc.key, enc.pub
Private keys are created with mode 0600. Nothing is overwritten.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from medledger.v1 import ledger_pb2

from node import genesis as genesis_mod
from node.crypto import keys
from node.crypto.certs import CertificateAuthority
from node.records.encryption_keys import write_key_pair

TIERS = ("tertiary", "secondary", "primary")
# Every node of a generated consortium shares one host and disk: each gets its own ledger
# memtable size, so that their LevelDB flushes and compactions (a burst of writes and a
# sync that delays the other nodes' Raft syncs on the same disk) come at different
# heights instead of all at once (docs/operations.md, "Several nodes on one disk").
STAGGERED_MEMTABLE_MB = (13, 16, 19, 22, 25, 28)


class ProvisionError(Exception):
    pass


@dataclass(frozen=True)
class Plan:
    out: Path
    hospitals: int = 1
    consenters: int = 1
    regulator: bool = False
    host: str = "127.0.0.1"
    base_port: int = 7050
    consortium: str = "medledger-demo"


def _tier(i: int, n: int) -> str:
    if i == 1:
        return "tertiary"
    return "secondary" if i <= max(2, n // 2) else "primary"


def _pem(cert: object) -> bytes:
    from cryptography import x509

    assert isinstance(cert, x509.Certificate)
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(cert: object) -> bytes:
    from cryptography import x509

    assert isinstance(cert, x509.Certificate)
    return cert.public_bytes(serialization.Encoding.DER)


def _write_identity(
    folder: Path, ca: CertificateAuthority, name: str, role: str, now: dt.datetime
) -> bytes:
    folder.mkdir(parents=True, mode=0o700)
    key = keys.generate_key()
    cert = ca.issue(name, role, key.public_key(), now)
    keys.write_private(folder / "key.pem", keys.private_pem(key))
    (folder / "cert.pem").write_bytes(_pem(cert))
    # The identity's HPKE key pair (hybrid ML-KEM-768 + X25519): encryption keys are
    # not signing keys (DESIGN §6).
    write_key_pair(folder)
    return _der(cert)


def libp2p_peer_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """The libp2p peer id (base58) of a node's Ed25519 p2p key: the identity multihash of
    the protobuf-encoded public key, as libp2p computes it."""
    from libp2p.crypto.ed25519 import Ed25519PublicKey
    from libp2p.peer.id import ID

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return str(ID.from_pubkey(Ed25519PublicKey.from_bytes(raw)).to_base58())


def init_consortium(plan: Plan) -> Path:
    if plan.hospitals < 1 or not 1 <= plan.consenters <= plan.hospitals:
        raise ProvisionError("need --hospitals >= 1 and 1 <= --consenters <= --hospitals")
    if plan.base_port < 1024 or plan.base_port + 10 * (plan.hospitals + 1) > 65535:
        raise ProvisionError("--base-port must leave room for 10 ports per node below 65536")
    out = plan.out
    if out.exists() and not out.is_dir():
        raise ProvisionError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        raise ProvisionError(f"{out} exists and is not empty; refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    institutions = [f"hosp{i}" for i in range(1, plan.hospitals + 1)]
    authorities = ["regulator"]
    cas: dict[str, CertificateAuthority] = {}
    for inst in institutions + authorities:
        ca = CertificateAuthority.create(inst, keys.generate_key(), now)
        cas[inst] = ca
        folder = out / "cas" / inst
        folder.mkdir(parents=True, mode=0o700)
        keys.write_private(folder / "ca.key.pem", keys.private_pem(ca.key))
        (folder / "ca.cert.pem").write_bytes(_pem(ca.certificate))
    (out / "ca-bundle.pem").write_bytes(b"".join(_pem(ca.certificate) for ca in cas.values()))

    ids = out / "identities"
    leader_der = _write_identity(ids / "leader", cas["hosp1"], "leader", "leader", now)
    regulator_der = _write_identity(
        ids / "regulator", cas["regulator"], "regulator", "regulator", now
    )
    for inst in institutions:
        _write_identity(ids / f"{inst}-admin", cas[inst], f"{inst}-admin", "institution", now)
        for n in (1, 2):
            _write_identity(
                ids / f"{inst}-doctor{n}", cas[inst], f"{inst}-doctor{n}", "doctor", now
            )
            _write_identity(
                ids / f"{inst}-patient{n}", cas[inst], f"{inst}-patient{n}", "patient", now
            )

    node_names = institutions + (["regulator"] if plan.regulator else [])
    nodes: list[ledger_pb2.NodeInfo] = []
    for i, name in enumerate(node_names):
        inst = name
        api_port = plan.base_port + 10 * i
        folder = out / "nodes" / name
        folder.mkdir(parents=True, mode=0o700)
        node_key = keys.generate_key()
        cert = cas[inst].issue(
            name, "node", node_key.public_key(), now, tls_hosts=[plan.host, "localhost"]
        )
        keys.write_private(folder / "node.key.pem", keys.private_pem(node_key))
        (folder / "node.cert.pem").write_bytes(_pem(cert))
        p2p_key = ed25519.Ed25519PrivateKey.generate()
        keys.write_private(folder / "p2p.key", keys.private_pem(p2p_key))
        peer_id = libp2p_peer_id(p2p_key.public_key())
        nodes.append(
            ledger_pb2.NodeInfo(
                name=name,
                institution=inst,
                certificate=_der(cert),
                peer_id=peer_id,
                p2p_address=f"/ip4/{plan.host}/tcp/{api_port + 1}/p2p/{peer_id}",
                api_address=f"{plan.host}:{api_port}",
                consenter=i < plan.consenters,
            )
        )

    config = ledger_pb2.GenesisConfig(
        consortium=plan.consortium,
        created_at_ms=int(now.timestamp() * 1000),
        institutions=[
            ledger_pb2.Institution(
                id=inst,
                name=f"Hospital {inst[4:]}",
                tier=_tier(i, plan.hospitals),
                region=f"region-{'ab'[(i - 1) % 2]}",
                ca_certificate=_der(cas[inst].certificate),
            )
            for i, inst in enumerate(institutions, start=1)
        ]
        + [
            ledger_pb2.Institution(
                id="regulator",
                name="Regional Health Commission",
                tier="authority",
                region="region-a",
                ca_certificate=_der(cas["regulator"].certificate),
            )
        ],
        leader_certificate=leader_der,
        regulator_certificate=regulator_der,
        nodes=nodes,
        params=genesis_mod.DEFAULT_PARAMS,
        contracts=[genesis_mod.builtin_contract(n) for n in genesis_mod.BUILTIN_CONTRACTS],
    )
    (out / "genesis.block").write_bytes(genesis_mod.build(config))

    for i, info in enumerate(nodes):
        folder = out / "nodes" / info.name
        others = [n.p2p_address for n in nodes if n.name != info.name]
        listen = info.p2p_address.split("/p2p/")[0]
        doc = {
            "node": {
                "name": info.name,
                "institution": info.institution,
                "data_dir": "data",
                "genesis": os.path.relpath(out / "genesis.block", folder),
                "key": "node.key.pem",
                "certificate": "node.cert.pem",
            },
            "api": {"listen": info.api_address},
            "p2p": {"listen": listen, "key": "p2p.key", "bootstrap": others},
            "storage": {
                "ledger_memtable_mb": STAGGERED_MEMTABLE_MB[i % len(STAGGERED_MEMTABLE_MB)]
            },
            "log": {"level": "info", "format": "auto"},
            "metrics": {"listen": f"{plan.host}:{int(info.api_address.rsplit(':', 1)[1]) + 2}"},
        }
        (folder / "config.toml").write_text(
            "# Generated by `medledger init-consortium`; every key is documented in\n"
            "# deploy/config.example.toml.\n" + tomli_w.dumps(doc)
        )
    return out

"""`init-consortium`: keys, certificates, configs and the genesis block it writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from medledger.v1 import ledger_pb2

from node import genesis as genesis_mod
from node.crypto import keys
from node.crypto.certs import IdentityVerifier
from node.crypto.hashing import sha256
from node.execution.sandbox import ENGINE_VERSION
from node.genesis import Genesis, GenesisError
from node.provisioning import Plan, ProvisionError, init_consortium, libp2p_peer_id

PRIVATE_NAMES = {"key.pem", "enc.key", "ca.key.pem", "node.key.pem", "p2p.key"}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def subject(cert: x509.Certificate) -> tuple[str, str, str]:
    def one(oid: x509.ObjectIdentifier) -> str:
        return str(cert.subject.get_attributes_for_oid(oid)[0].value)

    return (
        one(NameOID.COMMON_NAME),
        one(NameOID.ORGANIZATION_NAME),
        one(NameOID.ORGANIZATIONAL_UNIT_NAME),
    )


def test_private_key_files_are_mode_0600(consortium: Path) -> None:
    private = [p for p in consortium.rglob("*") if p.name in PRIVATE_NAMES]
    # 3 CAs + 12 identities x 2 + 2 nodes x 2
    assert len(private) == 3 + 24 + 4
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (consortium / "identities").iterdir():
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_refuses_to_overwrite_a_non_empty_folder(consortium: Path) -> None:
    before = snapshot(consortium)
    with pytest.raises(ProvisionError) as info:
        init_consortium(Plan(consortium, hospitals=2))
    assert str(info.value) == f"{consortium} exists and is not empty; refusing to overwrite it"
    assert snapshot(consortium) == before


def test_an_existing_empty_folder_is_used(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert init_consortium(Plan(out)) == out
    assert (out / "genesis.block").is_file()


@pytest.mark.parametrize(
    ("hospitals", "consenters", "base_port"),
    [(0, 1, 7050), (2, 0, 7050), (2, 3, 7050), (1, 1, 80), (1, 1, 65530)],
)
def test_bad_plans_are_refused_before_writing(
    tmp_path: Path, hospitals: int, consenters: int, base_port: int
) -> None:
    out = tmp_path / "c"
    with pytest.raises(ProvisionError):
        init_consortium(Plan(out, hospitals, consenters, base_port=base_port))
    assert not out.exists()


def test_identity_names_and_subjects(consortium: Path, genesis: Genesis) -> None:
    ids = consortium / "identities"
    expected = {"leader", "regulator"}
    for inst in ("hosp1", "hosp2"):
        expected |= {f"{inst}-admin"}
        expected |= {f"{inst}-{kind}{n}" for kind in ("doctor", "patient") for n in (1, 2)}
    assert {p.name for p in ids.iterdir()} == expected

    verifier = IdentityVerifier(genesis.ca_certificates())
    for name in expected:
        folder = ids / name
        assert {p.name for p in folder.iterdir()} == {"key.pem", "cert.pem", "enc.key", "enc.pub"}
        cert = cert_of(folder / "cert.pem")
        if name in ("leader", "regulator"):
            want = (name, "hosp1" if name == "leader" else "regulator", name)
        else:
            inst, role = name.split("-")
            role = "institution" if role == "admin" else role.rstrip("12")
            want = (name, inst, role)
        assert subject(cert) == want
        identity = verifier.identify(cert.public_bytes(Encoding.DER))
        assert (identity.name, identity.institution, identity.role) == want
        key = keys.load_private(folder / "key.pem")
        assert key.public_key() == cert.public_key()
        assert keys.algorithm_of(key) == keys.ECDSA_P256_SHA256


def test_genesis_lists_institutions_nodes_and_contracts(consortium: Path, genesis: Genesis) -> None:
    cfg = genesis.config
    assert cfg.consortium == "medledger-demo"
    assert [(i.id, i.tier) for i in cfg.institutions] == [
        ("hosp1", "tertiary"),
        ("hosp2", "secondary"),
        ("regulator", "authority"),
    ]
    for inst in cfg.institutions:
        ca_pem = (consortium / "cas" / inst.id / "ca.cert.pem").read_bytes()
        assert inst.ca_certificate == x509.load_pem_x509_certificate(ca_pem).public_bytes(
            Encoding.DER
        )
    peer_ids = [n.peer_id for n in cfg.nodes]
    assert all(p.startswith("12D3KooW") for p in peer_ids)
    assert [
        (n.name, n.institution, n.consenter, n.api_address, n.p2p_address) for n in cfg.nodes
    ] == [
        ("hosp1", "hosp1", True, "127.0.0.1:7050", f"/ip4/127.0.0.1/tcp/7051/p2p/{peer_ids[0]}"),
        ("hosp2", "hosp2", False, "127.0.0.1:7060", f"/ip4/127.0.0.1/tcp/7061/p2p/{peer_ids[1]}"),
    ]
    for node in cfg.nodes:
        folder = consortium / "nodes" / node.name
        p2p_key = keys.load_private(folder / "p2p.key")
        assert isinstance(p2p_key, ed25519.Ed25519PrivateKey)
        assert node.peer_id == libp2p_peer_id(p2p_key.public_key())
        assert node.certificate == cert_of(folder / "node.cert.pem").public_bytes(Encoding.DER)
        assert subject(cert_of(folder / "node.cert.pem")) == (node.name, node.institution, "node")
        assert {p.name for p in folder.iterdir()} == {
            "config.toml",
            "node.key.pem",
            "node.cert.pem",
            "p2p.key",
        }
    assert {p.name for p in (consortium / "nodes").iterdir()} == {"hosp1", "hosp2"}

    assert [c.name for c in cfg.contracts] == [
        "kv",
        "consortium",
        "records",
        "consent",
        "referral",
        "audit",
    ]
    for code in cfg.contracts:
        source = (Path(__file__).resolve().parents[2] / "contracts" / f"{code.name}.py").read_text()
        assert code.source == source
        assert code.code_hash == sha256(source.encode())
        assert code.engine_version == ENGINE_VERSION
    deps = {c.name: tuple(c.dependencies) for c in cfg.contracts}
    assert deps["kv"] == () and "consortium" in deps["referral"]

    leader = cert_of(consortium / "identities" / "leader" / "cert.pem")
    regulator = cert_of(consortium / "identities" / "regulator" / "cert.pem")
    assert cfg.leader_certificate == leader.public_bytes(Encoding.DER)
    assert cfg.regulator_certificate == regulator.public_bytes(Encoding.DER)
    assert cfg.params == genesis_mod.DEFAULT_PARAMS


def test_genesis_block_hashes(genesis: Genesis) -> None:
    assert genesis.header.height == 0
    assert genesis.header.prev_hash == bytes(32)
    assert genesis.header.tx_root == sha256(genesis.block.genesis_config)
    assert genesis.header.state_hash == genesis_mod.genesis_state_hash(genesis.block.genesis_config)
    assert genesis.hash == genesis.chain_id == sha256(genesis.block.header)
    assert genesis.node("hosp2").api_address == "127.0.0.1:7060"
    with pytest.raises(GenesisError, match="node 'hosp9' is not in the genesis block"):
        genesis.node("hosp9")


def test_bad_genesis_files(tmp_path: Path, genesis: Genesis) -> None:
    with pytest.raises(GenesisError, match="cannot read genesis block"):
        genesis_mod.load(tmp_path / "nope.block")
    with pytest.raises(GenesisError, match="not a genesis block"):
        genesis_mod.parse(b"\xff\xff\xff")
    block = ledger_pb2.Block()
    block.CopyFrom(genesis.block)
    block.genesis_config = block.genesis_config + b"\x0a\x01x"  # consortium = "x"
    with pytest.raises(GenesisError, match="genesis header does not match its configuration"):
        genesis_mod.parse(block.SerializeToString())


def test_regulator_node_and_tiers(tmp_path: Path) -> None:
    out = init_consortium(Plan(tmp_path / "c", hospitals=4, consenters=3, regulator=True))
    genesis = genesis_mod.load(out / "genesis.block")
    assert [(n.name, n.consenter) for n in genesis.config.nodes] == [
        ("hosp1", True),
        ("hosp2", True),
        ("hosp3", True),
        ("hosp4", False),
        ("regulator", False),
    ]
    assert [i.tier for i in genesis.config.institutions] == [
        "tertiary",
        "secondary",
        "primary",
        "primary",
        "authority",
    ]
    assert {p.name for p in (out / "nodes").iterdir()} == {
        "hosp1",
        "hosp2",
        "hosp3",
        "hosp4",
        "regulator",
    }
    assert (out / "identities" / "hosp4-patient2" / "cert.pem").is_file()


def test_write_private_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    keys.write_private(path, b"one")
    with pytest.raises(FileExistsError):
        keys.write_private(path, b"two")
    assert path.read_bytes() == b"one"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_out_that_is_a_file_is_refused_clearly(tmp_path: Path) -> None:
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(ProvisionError):
        init_consortium(Plan(out))

"""The genesis block: founding institutions, leader, regulator, nodes, parameters, and the
built-in contracts' source. chain_id = hash of the genesis block."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from google.protobuf.message import DecodeError
from medledger.v1 import ledger_pb2

from node.crypto.hashing import EMPTY_ROOT, sha256
from node.execution.sandbox.checker import check_source
from node.execution.sandbox.version import ENGINE_VERSION

BUILTIN_CONTRACTS = ("kv", "consortium", "records", "consent", "referral", "audit")
HEADER_VERSION = 1

DEFAULT_PARAMS = ledger_pb2.ConsensusParams(
    batch_timeout_ms=100,
    max_block_txs=2000,
    max_block_bytes=8 * 1024 * 1024,
    max_tx_bytes=256 * 1024,
    max_tx_ttl_ms=10 * 60 * 1000,
    max_clock_skew_ms=30_000,
    election_tick_ms=100,
    heartbeat_ticks=1,
    election_ticks=10,
    # Gas bounds memory only roughly (about 100 bytes a step at worst, sandbox README):
    # keep a call well under the workers' 1 GiB address-space limit.
    max_gas_per_tx=5_000_000,
)


class GenesisError(Exception):
    pass


@dataclass(frozen=True)
class Genesis:
    block_bytes: bytes
    block: ledger_pb2.Block
    header: ledger_pb2.BlockHeader
    config: ledger_pb2.GenesisConfig
    hash: bytes

    @property
    def chain_id(self) -> bytes:
        return self.hash

    def ca_certificates(self) -> dict[str, bytes]:
        return {inst.id: inst.ca_certificate for inst in self.config.institutions}

    def node(self, name: str) -> ledger_pb2.NodeInfo:
        for info in self.config.nodes:
            if info.name == name:
                return info
        raise GenesisError(f"node {name!r} is not in the genesis block")


def builtin_contract(name: str) -> ledger_pb2.ContractCode:
    source = resources.files("contracts").joinpath(f"{name}.py").read_text("utf-8")
    return ledger_pb2.ContractCode(
        name=name,
        source=source,
        code_hash=sha256(source.encode()),
        engine_version=ENGINE_VERSION,
        dependencies=check_source(source, filename=f"<contract {name}>").dependencies,
    )


def genesis_state(config: ledger_pb2.GenesisConfig) -> dict[bytes, bytes]:
    """The world state the chain starts from, a pure function of the configuration (so
    the genesis state_hash, which covers the configuration, covers it too): the founding
    institutions, the leader and regulator identities, and the nodes, in the `consortium`
    contract's namespace where contracts read them with `get_from("consortium", ...)`."""

    def value(data: dict[str, object]) -> bytes:
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    state = {
        f"consortium/institution/{i.id}".encode(): value(
            {"id": i.id, "name": i.name, "tier": i.tier, "region": i.region, "status": "active"}
        )
        for i in config.institutions
    }
    state[b"consortium/role/leader"] = value({"identity": sha256(config.leader_certificate).hex()})
    state[b"consortium/role/regulator"] = value(
        {"identity": sha256(config.regulator_certificate).hex()}
    )
    for n in config.nodes:
        state[f"consortium/node/{n.name}".encode()] = value(
            {
                "name": n.name,
                "institution": n.institution,
                "consenter": n.consenter,
                "peer_id": n.peer_id,
            }
        )
    return state


def genesis_state_hash(config_bytes: bytes) -> bytes:
    return sha256(b"medledger/state/0" + sha256(config_bytes))


def build(config: ledger_pb2.GenesisConfig) -> bytes:
    config_bytes = config.SerializeToString()
    header = ledger_pb2.BlockHeader(
        height=0,
        prev_hash=bytes(32),
        timestamp_ms=config.created_at_ms,
        tx_root=sha256(config_bytes),
        results_root=EMPTY_ROOT,
        state_hash=genesis_state_hash(config_bytes),
        proposer="genesis",
        hash_algorithm=1,  # type: ignore[arg-type]
        version=HEADER_VERSION,
    )
    block = ledger_pb2.Block(header=header.SerializeToString(), genesis_config=config_bytes)
    return block.SerializeToString()


def parse(block_bytes: bytes) -> Genesis:
    block = ledger_pb2.Block()
    header = ledger_pb2.BlockHeader()
    config = ledger_pb2.GenesisConfig()
    try:
        block.ParseFromString(block_bytes)
        header.ParseFromString(block.header)
        config.ParseFromString(block.genesis_config)
    except DecodeError as exc:
        raise GenesisError(f"not a genesis block: {exc}") from exc
    if header.height != 0 or header.tx_root != sha256(block.genesis_config):
        raise GenesisError("genesis header does not match its configuration")
    if not config.institutions or not config.nodes:
        raise GenesisError("genesis block lists no institutions or no nodes")
    return Genesis(block_bytes, block, header, config, sha256(block.header))


def load(path: Path) -> Genesis:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GenesisError(f"cannot read genesis block {path}: {exc.strerror}") from exc
    return parse(data)

"""Node configuration: a TOML file, overridable by MEDLEDGER_<SECTION>_<KEY> variables.

Every key is documented in deploy/config.example.toml. Unknown keys and bad values are
errors that name the key: a typo must never silently fall back to a default.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class NodeSection:
    name: str = ""
    institution: str = ""
    data_dir: str = "data"
    genesis: str = "genesis.block"
    key: str = "node.key.pem"
    certificate: str = "node.cert.pem"


@dataclass(frozen=True)
class ApiSection:
    listen: str = "127.0.0.1:7050"
    max_workers: int = 32
    wait_timeout_ms: int = 30_000
    tls: bool = False
    tls_certificate: str = ""
    tls_key: str = ""
    client_ca: str = ""  # PEM bundle of CAs whose client certificates are accepted
    require_client_certificate: bool = False
    # StreamEvents without a signed request sees every event (metadata of all
    # institutions): only for a node whose gateway only trusted systems reach.
    unsigned_events: bool = False


@dataclass(frozen=True)
class P2PSection:
    listen: str = "/ip4/127.0.0.1/tcp/7051"
    key: str = "p2p.key"
    bootstrap: list[str] = field(default_factory=list)
    psk: str = ""
    # Spread this node's admitted transactions on the `txs` gossip topic besides
    # forwarding them to the leader (DESIGN 3.1 step 2: gossip is never relied on).
    # With it, another node forwards them if this one stops before they commit; without
    # it, every node admits each transaction once instead of once more per gossip copy.
    gossip_txs: bool = True


@dataclass(frozen=True)
class MempoolSection:
    max_txs: int = 50_000
    max_bytes: int = 128 * 1024 * 1024
    institution_share: float = 0.5


@dataclass(frozen=True)
class StorageSection:
    # Size of each Raft write-ahead log segment (data_dir/raft): a released segment is
    # reused, or a new one zero-filled ahead of use.
    raft_segment_mb: int = 64
    # LevelDB's write buffer for the ledger (data_dir/ledger): the memtable is written out
    # as a table, and compacted, each time this much has been written. Nodes that share
    # a disk should have different values (docs/operations.md, "Several nodes on one disk").
    ledger_memtable_mb: int = 16


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    format: str = "auto"  # json | console | auto (console on a TTY)


@dataclass(frozen=True)
class MetricsSection:
    listen: str = ""  # host:port; empty = off


@dataclass(frozen=True)
class TestingSection:
    # Fault injection through the admin socket (network gates, forced divergence), for
    # the project's own tests. Never enable it on a production node.
    fault_injection: bool = False
    # Append every payload this node sends to its peers (before Noise encrypts it) to
    # this file, for the privacy tests that look for patient data on the wire.
    p2p_capture: str = ""


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    node: NodeSection
    api: ApiSection
    p2p: P2PSection
    mempool: MempoolSection
    storage: StorageSection
    log: LogSection
    metrics: MetricsSection
    testing: TestingSection

    def resolve(self, relative: str) -> Path:
        """Paths in the file are relative to the file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else (self.path.parent / p).resolve()


_SECTIONS: dict[str, type[Any]] = {
    "node": NodeSection,
    "api": ApiSection,
    "p2p": P2PSection,
    "mempool": MempoolSection,
    "storage": StorageSection,
    "log": LogSection,
    "metrics": MetricsSection,
    "testing": TestingSection,
}

_CHOICES = {
    ("log", "level"): {"debug", "info", "warning", "error"},
    ("log", "format"): {"json", "console", "auto"},
}


def _coerce(section: str, key: str, value: Any, default: Any, problems: list[str]) -> Any:
    where = f"{section}.{key}"
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
            value = value.lower() in {"true", "1"}
        if not isinstance(value, bool):
            problems.append(f"{where} must be true or false, not {value!r}")
    elif isinstance(default, int):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{where} must be a non-negative integer, not {value!r}")
    elif isinstance(default, float):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < float(value) <= 1
        ):
            problems.append(f"{where} must be a number in (0, 1], not {value!r}")
        else:
            value = float(value)
    elif isinstance(default, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{where} must be a list of strings")
    elif not isinstance(value, str):
        problems.append(f"{where} must be a string, not {value!r}")
    choices = _CHOICES.get((section, key))
    if choices and value not in choices:
        problems.append(f"{where} must be one of {sorted(choices)}, not {value!r}")
    return value


def parse(path: Path, data: Mapping[str, Any], env: Mapping[str, str]) -> NodeConfig:
    problems: list[str] = []
    for section in data:
        if section not in _SECTIONS:
            problems.append(f"unknown section [{section}]")
    built: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            problems.append(f"[{section}] must be a table")
            raw = {}
        defaults = cls()
        known = [f.name for f in fields(cls)]
        for key in raw:
            if key not in known:
                problems.append(f"unknown key {section}.{key}")
        values: dict[str, Any] = {}
        for name in known:
            env_name = f"MEDLEDGER_{section.upper()}_{name.upper()}"
            if env_name in env:
                value: Any = env[env_name]
            elif name in raw:
                value = raw[name]
            else:
                continue
            values[name] = _coerce(section, name, value, getattr(defaults, name), problems)
        built[section] = cls(**values)
    prefixes = {
        f"MEDLEDGER_{sec.upper()}_{f.name.upper()}"
        for sec, c in _SECTIONS.items()
        for f in fields(c)
    }
    for name in sorted(env):
        if name.startswith("MEDLEDGER_") and name not in prefixes:
            problems.append(f"unknown environment variable {name}")
    if not built["node"].name:
        problems.append("node.name is required")
    if built["api"].tls is True and not (built["api"].tls_certificate and built["api"].tls_key):
        problems.append("api.tls = true needs api.tls_certificate and api.tls_key")
    if not 1 <= built["storage"].raft_segment_mb <= 1024:
        problems.append("storage.raft_segment_mb must be between 1 and 1024")
    if not 4 <= built["storage"].ledger_memtable_mb <= 512:
        problems.append("storage.ledger_memtable_mb must be between 4 and 512")
    if problems:
        raise ConfigError(problems)
    return NodeConfig(path=path.resolve(), **built)


def load(path: Path, env: Mapping[str, str] | None = None) -> NodeConfig:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror}"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path} is not valid TOML: {exc}"]) from exc
    return parse(path, data, os.environ if env is None else env)

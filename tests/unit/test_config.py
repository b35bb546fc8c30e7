"""Node configuration: TOML with MEDLEDGER_<SECTION>_<KEY> overrides; every problem named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node import config
from node.config import (
    ApiSection,
    ConfigError,
    LogSection,
    MempoolSection,
    MetricsSection,
    NodeConfig,
    NodeSection,
    P2PSection,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "config.example.toml"
MINIMAL: dict[str, Any] = {"node": {"name": "hosp1"}}


def parse(data: dict[str, Any], env: dict[str, str] | None = None) -> NodeConfig:
    return config.parse(Path("/etc/medledger/config.toml"), data, env or {})


def problems(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, env)
    assert str(info.value) == "; ".join(info.value.problems)
    return info.value.problems


def test_defaults() -> None:
    cfg = parse(MINIMAL)
    assert cfg.node == NodeSection(name="hosp1")
    assert cfg.api == ApiSection()
    assert cfg.p2p == P2PSection()
    assert cfg.mempool == MempoolSection()
    assert cfg.log == LogSection()
    assert cfg.metrics == MetricsSection()
    assert cfg.api.listen == "127.0.0.1:7050"
    assert (cfg.mempool.max_txs, cfg.mempool.institution_share) == (50_000, 0.5)
    assert cfg.path == Path("/etc/medledger/config.toml")


def test_the_example_file_shows_every_default() -> None:
    cfg = config.load(EXAMPLE, env={})
    assert cfg.node == NodeSection(name="hosp1", institution="hosp1")
    assert (cfg.api, cfg.p2p, cfg.mempool, cfg.log, cfg.metrics) == (
        ApiSection(),
        P2PSection(),
        MempoolSection(),
        LogSection(),
        MetricsSection(),
    )


def test_node_name_is_required() -> None:
    assert problems({}) == ["node.name is required"]


def test_unknown_section_and_key_are_named() -> None:
    found = problems({"node": {"name": "n", "nmae": "x"}, "apii": {}, "api": {"lisen": "x"}})
    assert found == ["unknown section [apii]", "unknown key node.nmae", "unknown key api.lisen"]


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        (
            "api",
            "max_workers",
            "many",
            "api.max_workers must be a non-negative integer, not 'many'",
        ),
        ("api", "max_workers", -1, "api.max_workers must be a non-negative integer, not -1"),
        ("api", "max_workers", True, "api.max_workers must be a non-negative integer, not True"),
        ("api", "max_workers", 1.5, "api.max_workers must be a non-negative integer, not 1.5"),
        ("api", "tls", "yes", "api.tls must be true or false, not 'yes'"),
        ("api", "tls", 1, "api.tls must be true or false, not 1"),
        ("api", "listen", 7050, "api.listen must be a string, not 7050"),
        (
            "mempool",
            "institution_share",
            2,
            "mempool.institution_share must be a number in (0, 1], not 2",
        ),
        (
            "mempool",
            "institution_share",
            0,
            "mempool.institution_share must be a number in (0, 1], not 0",
        ),
        (
            "mempool",
            "institution_share",
            "half",
            "mempool.institution_share must be a number in (0, 1], not 'half'",
        ),
        ("p2p", "bootstrap", [1], "p2p.bootstrap must be a list of strings"),
        (
            "storage",
            "ledger_memtable_mb",
            2,
            "storage.ledger_memtable_mb must be between 4 and 512",
        ),
        (
            "storage",
            "ledger_memtable_mb",
            1024,
            "storage.ledger_memtable_mb must be between 4 and 512",
        ),
        ("p2p", "bootstrap", {"a": 1}, "p2p.bootstrap must be a list of strings"),
        (
            "log",
            "level",
            "loud",
            "log.level must be one of ['debug', 'error', 'info', 'warning'], not 'loud'",
        ),
        (
            "log",
            "format",
            "xml",
            "log.format must be one of ['auto', 'console', 'json'], not 'xml'",
        ),
    ],
)
def test_bad_values_are_named(section: str, key: str, value: Any, problem: str) -> None:
    data = {"node": {"name": "n"}, section: {key: value}}
    found = problems(data)
    assert found[0] == problem
    # A bad api.tls value also reads as "tls on" for the cross-key check (harmless extra).
    assert found[1:] in ([], ["api.tls = true needs api.tls_certificate and api.tls_key"])


def test_bool_is_not_a_number_for_a_float_key() -> None:
    assert problems({"node": {"name": "n"}, "mempool": {"institution_share": True}}) == [
        "mempool.institution_share must be a number in (0, 1], not True"
    ]


def test_a_section_that_is_not_a_table() -> None:
    assert problems({"node": "hosp1"}) == ["[node] must be a table", "node.name is required"]


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"api": {"max_workers": "x", "tls": True}, "log": {"level": "LOUD"}})
    assert found == [
        "api.max_workers must be a non-negative integer, not 'x'",
        "log.level must be one of ['debug', 'error', 'info', 'warning'], not 'LOUD'",
        "node.name is required",
        "api.tls = true needs api.tls_certificate and api.tls_key",
    ]


def test_environment_overrides_the_file() -> None:
    cfg = parse(
        {"node": {"name": "n"}, "api": {"listen": "127.0.0.1:1", "max_workers": 4}},
        {
            "MEDLEDGER_API_LISTEN": "0.0.0.0:9050",
            "MEDLEDGER_API_MAX_WORKERS": "8",
            "MEDLEDGER_API_REQUIRE_CLIENT_CERTIFICATE": "TRUE",
            "MEDLEDGER_P2P_BOOTSTRAP": "/ip4/10.0.0.1/tcp/1,/ip4/10.0.0.2/tcp/1",
            "MEDLEDGER_MEMPOOL_INSTITUTION_SHARE": "0.25",
            "MEDLEDGER_LOG_LEVEL": "debug",
            "MEDLEDGER_NODE_DATA_DIR": "/var/lib/medledger",
            "OTHER_API_LISTEN": "ignored",
        },
    )
    assert cfg.api.listen == "0.0.0.0:9050"
    assert cfg.api.max_workers == 8
    assert cfg.api.require_client_certificate is True
    assert cfg.p2p.bootstrap == ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/1"]
    assert cfg.mempool.institution_share == 0.25
    assert cfg.log.level == "debug"
    assert cfg.node.data_dir == "/var/lib/medledger"


def test_environment_can_supply_required_and_tls_keys() -> None:
    cfg = parse(
        {},
        {
            "MEDLEDGER_NODE_NAME": "hosp2",
            "MEDLEDGER_API_TLS": "1",
            "MEDLEDGER_API_TLS_CERTIFICATE": "node.cert.pem",
            "MEDLEDGER_API_TLS_KEY": "node.key.pem",
        },
    )
    assert (cfg.node.name, cfg.api.tls, cfg.api.tls_key) == ("hosp2", True, "node.key.pem")


def test_bad_environment_values_are_named() -> None:
    found = problems(MINIMAL, {"MEDLEDGER_API_MAX_WORKERS": "eight", "MEDLEDGER_API_TLS": "maybe"})
    # Keys of one section are visited in set order: compare without order.
    assert set(found) - {"api.tls = true needs api.tls_certificate and api.tls_key"} == {
        "api.max_workers must be a non-negative integer, not 'eight'",
        "api.tls must be true or false, not 'maybe'",
    }


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "node"
    folder.mkdir(parents=True)
    path = folder / "config.toml"
    path.write_text('[node]\nname = "hosp1"\ndata_dir = "data"\ngenesis = "../genesis.block"\n')
    cfg = config.load(path, env={})
    assert cfg.resolve(cfg.node.data_dir) == (folder / "data").resolve()
    assert cfg.resolve(cfg.node.genesis) == (tmp_path / "etc" / "genesis.block").resolve()
    assert cfg.resolve("/abs/key.pem") == Path("/abs/key.pem")


def test_a_relative_config_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "config.toml").write_text('[node]\nname = "x"\n')
    monkeypatch.chdir(tmp_path)
    cfg = config.load(Path("n/config.toml"), env={})
    assert cfg.path == (tmp_path / "n" / "config.toml").resolve()
    monkeypatch.chdir("/")
    assert cfg.resolve("data") == (tmp_path / "n" / "data").resolve()


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cannot read .*missing\.toml: No such file"):
        config.load(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nname = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        config.load(bad, env={})


def test_load_reads_the_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[node]\nname = "x"\n')
    monkeypatch.setenv("MEDLEDGER_API_LISTEN", "127.0.0.1:9999")
    assert config.load(path).api.listen == "127.0.0.1:9999"


def test_generated_node_config_loads(consortium: Path) -> None:
    path = consortium / "nodes" / "hosp2" / "config.toml"
    cfg = config.load(path, env={})
    assert (cfg.node.name, cfg.node.institution) == ("hosp2", "hosp2")
    assert cfg.resolve(cfg.node.genesis) == (consortium / "genesis.block").resolve()
    assert cfg.resolve(cfg.node.key) == (path.parent / "node.key.pem").resolve()
    assert cfg.api.listen == "127.0.0.1:7060"
    assert cfg.p2p.listen == "/ip4/127.0.0.1/tcp/7061"
    # Other nodes' addresses carry their peer ids, so a dial is authenticated.
    assert [a.split("/p2p/")[0] for a in cfg.p2p.bootstrap] == ["/ip4/127.0.0.1/tcp/7051"]
    assert cfg.p2p.bootstrap[0].split("/p2p/")[1].startswith("12D3KooW")
    assert cfg.metrics.listen == "127.0.0.1:7062"


def test_generated_nodes_flush_their_ledgers_at_different_heights(consortium: Path) -> None:
    # All nodes of a generated consortium share one disk: each gets its own memtable size.
    sizes = [
        config.load(path, env={}).storage.ledger_memtable_mb
        for path in sorted(consortium.glob("nodes/*/config.toml"))
    ]
    assert len(sizes) > 1
    assert len(set(sizes)) == len(sizes)
    assert all(4 <= mb <= 64 for mb in sizes)

"""`medledger`: the command-line interface of DESIGN §8.

Exit codes: 0 success; 1 the command ran and the answer is "no" (an invalid transaction,
a ledger that fails verification, a bad config); 2 the command could not run (bad
arguments, node unreachable, unreadable files).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from node.codes import TxCode

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A command that cannot run; printed as one line, exit 2."""


def emit(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=False))
        return
    for key, value in data.items():
        if isinstance(value, list | dict):
            value = json.dumps(value)
        print(f"{key}: {value}")


def _client(args: argparse.Namespace) -> Any:
    from node.sdk.client import Client

    tls_ca = Path(args.tls_ca) if args.tls_ca else None
    ident = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key and tls_ca):
            raise CliError("--tls-cert and --tls-key go together, with --tls-ca")
        ident = (Path(args.tls_cert), Path(args.tls_key))
    return Client(args.node, tls_ca=tls_ca, tls_identity=ident)


def _identity(args: argparse.Namespace) -> Any:
    from node.sdk.client import Identity

    return Identity.load(args.identity)


def _json_args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"--args is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CliError('--args must be a JSON object, e.g. \'{"key": "a", "value": 1}\'')
    return value


# -- commands ----------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from node.provisioning import Plan, ProvisionError, init_consortium

    try:
        out = init_consortium(
            Plan(
                Path(args.out),
                args.hospitals,
                args.consenters,
                args.regulator,
                args.host,
                args.base_port,
            )
        )
    except ProvisionError as exc:
        raise CliError(str(exc)) from exc
    from node.genesis import load

    genesis = load(out / "genesis.block")
    emit(
        args,
        {
            "out": str(out),
            "chain_id": genesis.chain_id.hex(),
            "nodes": [
                {
                    "name": n.name,
                    "api": n.api_address,
                    "consenter": n.consenter,
                    "config": str(out / "nodes" / n.name / "config.toml"),
                }
                for n in genesis.config.nodes
            ],
        },
    )
    return 0


def cmd_node_start(args: argparse.Namespace) -> int:
    from node import config as config_mod
    from node import logs
    from node.daemon import run
    from node.execution.sandbox import Zygote

    try:
        cfg = config_mod.load(Path(args.config))
    except config_mod.ConfigError as exc:
        raise CliError("bad configuration: " + "; ".join(exc.problems)) from exc
    logs.configure(cfg.log.level, cfg.log.format, node=cfg.node.name)
    # The sandbox's parent process first, while this process has no threads yet
    # (grpcio and the libraries under it start threads).
    zygote = Zygote.start()
    try:
        run(cfg, zygote)
    finally:
        zygote.close()
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from node import config as config_mod

    try:
        cfg = config_mod.load(Path(args.config))
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 1
    print(f"{args.config}: ok (node {cfg.node.name})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        s = client.status()
    emit(
        args,
        {
            "node": s.node,
            "height": s.height,
            "last_block_hash": s.last_block_hash.hex(),
            "role": s.role,
            "leader": s.leader,
            "term": s.term,
            "peers": list(s.peers),
            "chain_id": s.chain_id.hex(),
            "mempool_size": s.mempool_size,
        },
    )
    return 0


def cmd_block_get(args: argparse.Namespace) -> int:
    from medledger.v1 import ledger_pb2

    from node.tx import parse

    with _client(args) as client:
        info = client.block(args.height)
    header = ledger_pb2.BlockHeader.FromString(info.block.header)
    txs = []
    for i, raw in enumerate(info.block.txs):
        code = TxCode(info.block.codes[i]).name if i < len(info.block.codes) else "?"
        try:
            tx = parse(raw, 1 << 30)
            txs.append(
                {
                    "id": tx.tx_id.hex(),
                    "contract": tx.contract,
                    "function": tx.function,
                    "code": code,
                }
            )
        except Exception:
            txs.append({"id": "", "contract": "", "function": "", "code": code})
    emit(
        args,
        {
            "height": header.height,
            "hash": info.hash.hex(),
            "prev_hash": header.prev_hash.hex(),
            "timestamp": header.timestamp_ms,
            "tx_root": header.tx_root.hex(),
            "results_root": header.results_root.hex(),
            "state_hash": header.state_hash.hex(),
            "proposer": header.proposer,
            "txs": txs,
        },
    )
    return 0


def cmd_tx_submit(args: argparse.Namespace) -> int:
    fn_args = _json_args(args.args)
    identity = _identity(args)
    with _client(args) as client:
        result = client.submit(identity, args.contract, args.function, fn_args, wait=args.wait)
    emit(args, result.to_json())
    return 1 if result.status == "invalid" else 0


def cmd_query(args: argparse.Namespace) -> int:
    fn_args = _json_args(args.args)
    identity = _identity(args)
    with _client(args) as client:
        result = client.query(identity, args.contract, args.function, fn_args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(json.dumps(result))
    return 0


def cmd_contract_deploy(args: argparse.Namespace) -> int:
    try:
        source = Path(args.file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read contract source {args.file}: {exc}") from exc
    identity = _identity(args)
    with _client(args) as client:
        result = client.submit(
            identity,
            "consortium",
            "deploy_contract",
            {"name": args.name, "source": source},
            wait=True,
        )
    emit(args, result.to_json())
    return 1 if result.status == "invalid" else 0


def cmd_contract_approve(args: argparse.Namespace) -> int:
    identity = _identity(args)
    with _client(args) as client:
        result = client.submit(
            identity,
            "consortium",
            "approve_contract",
            {"name": args.name, "code_hash": args.code_hash},
            wait=True,
        )
    emit(args, result.to_json())
    return 1 if result.status == "invalid" else 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from node.ledger.kvstore import StoreError
    from node.ledger.ledger import LedgerError
    from node.ledger.verify import verify_path

    try:
        report = verify_path(args.data_dir)
    except (StoreError, LedgerError) as exc:
        emit(args, {"ok": False, "error": str(exc)})
        return 1
    if report.ok:
        emit(args, {"ok": True, "height": report.height, "last_block_hash": report.last_block_hash})
        return 0
    emit(
        args,
        {
            "ok": False,
            "bad_height": report.bad_height,
            "problem": report.problem,
            "height": report.height,
        },
    )
    return 1


def _data_dir(config_file: str) -> Path:
    from node import config as config_mod

    try:
        cfg = config_mod.load(Path(config_file))
    except config_mod.ConfigError as exc:
        raise CliError("bad configuration: " + "; ".join(exc.problems)) from exc
    return cfg.resolve(cfg.node.data_dir)


def _admin(config_file: str, request: dict[str, Any]) -> dict[str, Any]:
    from node.ops.admin import call, socket_path

    try:
        answer = call(socket_path(_data_dir(config_file)), request)
    except ConnectionError as exc:
        raise CliError(str(exc)) from exc
    return answer


def cmd_admin(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"op": args.op.replace("-", "_")}
    if args.op == "log-level":
        request["level"] = args.level
    if args.op == "heap":
        request["top"] = args.top
    if args.op == "transfer-leader":
        request["timeout_s"] = args.timeout
        if args.to:
            request["to"] = args.to
    answer = _admin(args.config, request)
    emit(args, answer)
    return 0 if answer.get("ok") else 1


def cmd_backup(args: argparse.Namespace) -> int:
    answer = _admin(args.config, {"op": "backup", "dest": str(Path(args.out).resolve())})
    emit(args, answer)
    return 0 if answer.get("ok") else 1


def cmd_restore(args: argparse.Namespace) -> int:
    from node.ops.backup import BackupError, restore

    try:
        result = restore(Path(args.backup), _data_dir(args.config))
    except BackupError as exc:
        emit(args, {"ok": False, "error": str(exc)})
        return 1
    emit(args, {"ok": True, **result})
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from node.cli.demo import run_demo

    return run_demo(Path(args.keep) if args.keep else None)


# -- parser ------------------------------------------------------------------------------


def _node_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", required=True, metavar="HOST:PORT", help="the node's gRPC address")
    p.add_argument("--tls-ca", help="PEM CA bundle: connect with TLS, trusting these CAs")
    p.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", help="client key (PEM) for mutual TLS")
    p.add_argument("--json", action="store_true", help="print JSON")


def _call_opts(p: argparse.ArgumentParser) -> None:
    _node_opts(p)
    p.add_argument(
        "--identity",
        required=True,
        metavar="DIR",
        help="identity folder holding key.pem and cert.pem",
    )
    p.add_argument("--contract", required=True)
    p.add_argument("--function", required=True)
    p.add_argument("--args", default="{}", metavar="JSON", help="JSON object of arguments")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medledger", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init-consortium", help="generate CAs, keys, configs and genesis")
    p.add_argument("--out", required=True)
    p.add_argument("--hospitals", type=int, default=1)
    p.add_argument("--consenters", type=int, default=1)
    p.add_argument("--regulator", action="store_true", help="add a regulator node")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=7050)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("node", help="run the node daemon")
    nsub = p.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    q = nsub.add_parser("start", help="run in the foreground until SIGTERM/SIGINT")
    q.add_argument("--config", required=True)
    q.set_defaults(handler=cmd_node_start)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    q = csub.add_parser("check", help="validate a config file, naming every bad key")
    q.add_argument("config")
    q.set_defaults(handler=cmd_config_check)

    p = sub.add_parser("status", help="a node's height, role and leader")
    _node_opts(p)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("block", help="read blocks")
    bsub = p.add_subparsers(dest="block_command", required=True, metavar="ACTION")
    q = bsub.add_parser("get", help="one block by height")
    _node_opts(q)
    q.add_argument("--height", type=int, required=True)
    q.set_defaults(handler=cmd_block_get)

    p = sub.add_parser("tx", help="transactions")
    tsub = p.add_subparsers(dest="tx_command", required=True, metavar="ACTION")
    q = tsub.add_parser("submit", help="sign and submit a transaction")
    _call_opts(q)
    q.add_argument("--wait", action="store_true", help="wait until committed or invalid")
    q.set_defaults(handler=cmd_tx_submit)

    p = sub.add_parser("query", help="a signed read-only call")
    _call_opts(p)
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("contract", help="deploy and upgrade contracts (governance)")
    ksub = p.add_subparsers(dest="contract_command", required=True, metavar="ACTION")
    q = ksub.add_parser("deploy", help="deploy or upgrade a contract module (leader)")
    _node_opts(q)
    q.add_argument("--identity", required=True, metavar="DIR")
    q.add_argument("--name", required=True)
    q.add_argument("--file", required=True, metavar="PATH")
    q.set_defaults(handler=cmd_contract_deploy)
    q = ksub.add_parser("approve", help="approve a proposed contract (institution admin)")
    _node_opts(q)
    q.add_argument("--identity", required=True, metavar="DIR")
    q.add_argument("--name", required=True)
    q.add_argument("--code-hash", required=True, help="hex SHA-256 of the proposed source")
    q.set_defaults(handler=cmd_contract_approve)

    p = sub.add_parser("ledger", help="offline ledger tools")
    lsub = p.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    q = lsub.add_parser("verify", help="re-derive every hash of a stopped node's ledger")
    q.add_argument("--data-dir", required=True)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_ledger_verify)

    p = sub.add_parser("admin", help="operations on a running node (via its admin socket)")
    asub = p.add_subparsers(dest="op", required=True, metavar="ACTION")
    q = asub.add_parser("status", help="height and role, over the admin socket")
    q.add_argument("--config", required=True)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_admin)
    q = asub.add_parser(
        "heap", help="memory: RSS, GC objects, and with PYTHONTRACEMALLOC set where it goes"
    )
    q.add_argument("--config", required=True)
    q.add_argument("--top", type=int, default=25, help="source lines to list (1-500)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_admin)
    q = asub.add_parser(
        "transfer-leader",
        help="at the Raft leader: hand leadership to another consenter (before maintenance)",
    )
    q.add_argument("--config", required=True, help="the current leader's configuration")
    q.add_argument("--to", help="consenter to lead (default: the one with the most of the log)")
    q.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait, at most 120 (default 10)"
    )
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_admin)
    q = asub.add_parser("log-level", help="change the log level at run time")
    q.add_argument("--config", required=True)
    q.add_argument("level", choices=["debug", "info", "warning", "error"])
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_admin)

    p = sub.add_parser("backup", help="consistent online backup of a running node's ledger")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="new, empty folder for the backup")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_backup)

    p = sub.add_parser("restore", help="restore a backup into a stopped node's empty data dir")
    p.add_argument("--config", required=True)
    p.add_argument("--backup", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_restore)

    p = sub.add_parser("demo", help="run a local network and the example end to end")
    p.add_argument("--keep", metavar="DIR", help="leave the network's data and logs in DIR")
    p.set_defaults(handler=cmd_demo)

    # Business verbs live in their own modules; each adds its sub-commands here.
    from node.cli import consenter_cmds, consortium_cmds, records_cmds, referral_cmds

    for module in (records_cmds, consortium_cmds, referral_cmds, consenter_cmds):
        module.add_commands(sub, _node_opts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    from node.api.server import ApiError
    from node.config import ConfigError
    from node.crypto.keys import KeyFileError
    from node.daemon import StartupError
    from node.execution.sandbox import NondeterministicExecution, SandboxUnavailable
    from node.genesis import GenesisError
    from node.ledger.kvstore import StoreError
    from node.ledger.ledger import LedgerError
    from node.net import NetworkError
    from node.ordering.certificates import Diverged
    from node.sdk.client import ClientError

    try:
        return handler(args)
    except (CliError, ClientError, ConfigError, GenesisError, KeyFileError) as exc:
        print(f"medledger: {exc}", file=sys.stderr)
        return 2
    except (
        StoreError,
        LedgerError,
        StartupError,
        ApiError,
        NondeterministicExecution,
        SandboxUnavailable,
        NetworkError,
        Diverged,
    ) as exc:
        _log_fatal(exc)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        _log_fatal(exc, with_traceback=True)
        return 1


def _log_fatal(exc: Exception, with_traceback: bool = False) -> None:
    """One structured line with the cause, then exit non-zero (STYLE 9)."""
    import structlog

    structlog.get_logger("medledger").error(
        "fatal", error=str(exc), kind=type(exc).__name__, exc_info=exc if with_traceback else None
    )
    print(f"medledger: {type(exc).__name__}: {exc}", file=sys.stderr)

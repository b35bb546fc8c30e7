"""Running node daemons as child processes on loopback: used by the demo, the tests and
deploy/localnet. Ports are chosen free at run time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from node.procstat import stat_fields
from node.sdk.client import Client, ClientError


def free_base_port(span: int = 10, count: int = 1, host: str = "127.0.0.1") -> int:
    """A base port P such that P .. P + span*count - 1 are all free right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            base: int = s.getsockname()[1]
        if base + span * count >= 65000:
            continue
        if all(_free(host, base + i) for i in range(span * count)):
            return base
    raise RuntimeError("no free range of ports found on loopback")


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class NodeProcess:
    name: str
    config: Path
    api: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        full_env = {**os.environ, "MEDLEDGER_LOG_FORMAT": "json", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "node", "start", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with Client(self.api, timeout_s=2.0) as client:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"node {self.name} exited with {self.proc.returncode} during start-up; "
                        f"see {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    client.status()
                    return
                except ClientError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"node {self.name} did not serve within {timeout_s} s; "
                            f"see {self.log_path}"
                        ) from None
                    time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Signal the node and wait for it to exit; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- a local network in the background: `deploy/localnet up|down|status` ------------------


def _nodes(root: Path) -> list[tuple[str, Path, str]]:
    """(name, config path, api address) of every node folder under root/nodes."""
    import tomllib

    out = []
    for config in sorted((root / "nodes").glob("*/config.toml")):
        api = tomllib.loads(config.read_text())["api"]["listen"]
        out.append((config.parent.name, config, api))
    return out


def up(
    root: Path,
    hospitals: int,
    consenters: int,
    regulator: bool,
    env: dict[str, str] | None = None,
) -> list[NodeProcess]:
    """Generate the consortium under `root` unless it exists, start every node in the
    background (pid files in root/run, a log per node in root/logs), wait until each
    serves."""
    from node.provisioning import Plan, init_consortium

    if not (root / "genesis.block").exists():
        count = hospitals + (1 if regulator else 0)
        init_consortium(
            Plan(root, hospitals, consenters, regulator, base_port=free_base_port(count=count))
        )
    (root / "run").mkdir(exist_ok=True)
    started = []
    for name, config, api in _nodes(root):
        pid_file = root / "run" / f"{name}.pid"
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            continue
        node = NodeProcess(name, config, api, root / "logs" / f"{name}.log")
        node.start(env)
        assert node.proc is not None
        pid_file.write_text(str(node.proc.pid))
        started.append(node)
    for node in started:
        node.wait_ready(timeout_s=60)
    return started


def down(root: Path, timeout_s: float = 30.0) -> dict[str, str]:
    """SIGTERM every node started by `up`, wait for each to exit."""
    result = {}
    for pid_file in sorted((root / "run").glob("*.pid")):
        pid = int(pid_file.read_text())
        name = pid_file.stem
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                result[name] = "killed after timeout"
            else:
                result[name] = "stopped"
        else:
            result[name] = "was not running"
        pid_file.unlink()
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours counts as gone.
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="deploy/localnet", description="a local MedLedger network in the background"
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", required=True, help="network folder (created by up)")
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--consenters", type=int, default=3)
    parser.add_argument("--regulator", action="store_true")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    if args.action == "up":
        started = up(root, args.hospitals, args.consenters, args.regulator)
        print(json.dumps({"started": [n.name for n in started], "dir": str(root)}))
    elif args.action == "down":
        print(json.dumps(down(root)))
    else:
        status = {}
        for name, _config, api in _nodes(root):
            try:
                with Client(api, timeout_s=2) as client:
                    s = client.status()
                status[name] = {"api": api, "height": s.height, "role": s.role, "leader": s.leader}
            except ClientError as exc:
                status[name] = {"api": api, "error": str(exc)}
        print(json.dumps(status, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Operations on a single node: systemd notification, metrics and health, admin socket,
online backup and restore (issue 8, single-node parts)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

from netutil import Net, medledger

from node.sdk.client import Client, Identity
from perf.suite.consortium import histogram_totals


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
        body: bytes = resp.read()
    return body.decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_sd_notify_ready_watchdog_stopping(net: Net, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    net.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    # wait_ready returned: the API answers. READY=1 must already be waiting for us.
    messages: list[str] = []

    def receive_until(marker: str) -> None:
        while not any(marker in m for m in messages):
            messages.append(sock.recv(4096).decode())

    receive_until("READY=1")
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=height 0, role leader" in ready
    before = sum("WATCHDOG=1" in m for m in messages)
    deadline = time.monotonic() + 10
    while sum("WATCHDOG=1" in m for m in messages) < before + 3:
        assert time.monotonic() < deadline, messages
        messages.append(sock.recv(4096).decode())
    assert net.stop() == 0
    receive_until("STOPPING=1")
    sock.close()


def test_metrics_move_and_healthz(net: Net) -> None:
    node = net.start()
    metrics_port = int(net.api.rsplit(":", 1)[1]) + 2
    base = f"http://127.0.0.1:{metrics_port}"
    assert _scrape(base + "/healthz").startswith("ok")
    first = _scrape(base + "/metrics")
    assert _metric(first, "medledger_height") == 0
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    with Client(net.api) as client:
        for i in range(3):
            assert (
                client.submit(doctor, "kv", "put", {"key": f"m{i}", "value": i}, wait=True).status
                == "committed"
            )
    second = _scrape(base + "/metrics")
    assert _metric(second, "medledger_height") >= 3
    assert _metric(second, 'medledger_txs_committed_total{code="VALID"}') == 3
    assert _metric(second, "medledger_tx_latency_seconds_count") == 3
    assert _metric(second, 'medledger_raft_role{role="leader"}') == 1
    # Every block is a synced Raft save; its ledger batch is not synced (decision 010:
    # the ledger is synced before the Raft log is compacted). The perf suite reads the
    # same histogram back.
    syncs = histogram_totals(second, "disk_sync", "store")
    assert syncs["raft"]["count"] >= 3 and syncs["raft"]["seconds"] > 0
    assert "ledger" not in syncs
    # Collections are timed by generation (node/gctune.py); none may have run yet.
    assert "# TYPE medledger_gc_pause_seconds histogram" in second
    assert node.proc is not None


def test_admin_log_level_and_backup_under_load_restores(net: Net, tmp_path: Path) -> None:
    net.start()
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    config = str(net.config)
    run = medledger("admin", "log-level", "--config", config, "debug", "--json")
    assert run.rc == 0 and run.json()["level"] == "debug", run.out + run.err
    heap = medledger("admin", "heap", "--config", config, "--top", "5", "--json")
    assert heap.rc == 0, heap.out + heap.err
    report = heap.json()
    assert report["rss_mb"] > 10 and report["gc_objects"] > 1000
    assert report["gc_frozen"] > 1000  # the daemon froze what it made while opening
    assert 0 < report["rss_anon_mb"] <= report["rss_mb"] and report["rss_file_mb"] >= 0
    assert report["tracing"] is False and "PYTHONTRACEMALLOC" in report["hint"]
    bad = medledger("admin", "heap", "--config", config, "--top", "0", "--json")
    assert bad.rc == 1 and "top must be" in bad.out + bad.err

    stop = threading.Event()
    committed: list[int] = []

    def load() -> None:
        with Client(net.api) as client:
            i = 0
            while not stop.is_set():
                res = client.submit(doctor, "kv", "put", {"key": f"l{i}", "value": i}, wait=True)
                assert res.status == "committed"
                committed.append(res.height)
                i += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(committed) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        backup_dir = tmp_path / "backup"
        run = medledger("backup", "--config", config, "--out", str(backup_dir), "--json")
        assert run.rc == 0, run.out + run.err
        manifest = run.json()
        assert manifest["height"] >= 5
    finally:
        stop.set()
        worker.join()
    assert net.stop() == 0
    assert max(committed) >= manifest["height"]

    # Restore into a fresh node's empty data dir: it verifies and serves the backup height.
    data = net.data_dir
    data.rename(data.with_name("data.old"))
    run = medledger("restore", "--config", config, "--backup", str(backup_dir), "--json")
    assert run.rc == 0, run.out + run.err
    assert run.json()["height"] == manifest["height"]
    net.start()
    with Client(net.api) as client:
        # The backup's Raft log may hold entries committed after its newest block (they
        # are executed just behind the log): the node applies them, on the same chain.
        assert client.status().height >= manifest["height"]
        assert client.block(manifest["height"]).hash.hex() == manifest["last_block_hash"]
    # A second restore into the now non-empty data dir is refused.
    assert net.stop() == 0
    again = medledger("restore", "--config", config, "--backup", str(backup_dir), "--json")
    assert again.rc == 1 and "not empty" in again.json()["error"]

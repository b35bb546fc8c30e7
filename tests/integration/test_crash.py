"""SIGKILL under load: nothing acknowledged is lost, nothing applied twice (issues 2, 3);
a ledger that lost its newest blocks gets them back from the Raft log (decision 010)."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

from netutil import Net, medledger

from node.sdk.client import Client, ClientError, Identity


def test_sigkill_under_load_loses_no_acknowledged_transaction(net: Net) -> None:
    node = net.start()
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    acknowledged: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        with Client(net.api, timeout_s=5) as client:
            i = 0
            while not stop.is_set():
                try:
                    res = client.submit(
                        doctor, "kv", "put", {"key": f"w{worker}-{i}", "value": i}, wait=True
                    )
                except ClientError:
                    return  # the node died under us: this one was never acknowledged
                if res.status == "committed":
                    acknowledged.append(res.tx_id)
                i += 1

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 40:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    node.stop(sig=signal.SIGKILL)
    stop.set()
    for w in workers:
        w.join()

    net.start()
    with Client(net.api) as client:
        infos = [client.transaction(bytes.fromhex(tx_id)) for tx_id in acknowledged]
        assert all(info.status == 2 for info in infos)  # COMMITTED
        heights = {info.height for info in infos}
        assert max(heights) <= client.status().height
        # Still orders after the crash.
        assert (
            client.submit(doctor, "kv", "put", {"key": "after", "value": 1}, wait=True).status
            == "committed"
        )
    assert net.stop() == 0
    verify = medledger("ledger", "verify", "--data-dir", str(net.data_dir), "--json")
    assert verify.rc == 0, verify.out


def test_blocks_a_power_loss_took_from_the_ledger_come_back_from_the_raft_log(
    net: Net, tmp_path: Path
) -> None:
    """Blocks are written unsynced (decision 010). A power loss can leave the ledger at an
    earlier, consistent height while the Raft log, synced before every commit, holds the
    entries after it: the node applies them again and derives the same blocks."""
    doctor = Identity.load(net.identity("hosp1-doctor1"))

    def put(client: Client, key: str) -> str:
        res = client.submit(doctor, "kv", "put", {"key": key, "value": 1}, wait=True)
        assert res.status == "committed"
        return res.tx_id

    net.start()
    with Client(net.api) as client:
        early = [put(client, f"early{i}") for i in range(3)]
    assert net.stop() == 0
    # The ledger as the disk held it before the power loss: an earlier height.
    earlier = tmp_path / "ledger-earlier"
    shutil.copytree(net.data_dir / "ledger", earlier)

    net.start()
    with Client(net.api) as client:
        late = [put(client, f"late{i}") for i in range(3)]
        height = client.status().height
        hashes = {h: client.block(h).hash for h in range(1, height + 1)}
    assert net.stop() == 0
    shutil.rmtree(net.data_dir / "ledger")
    shutil.copytree(earlier, net.data_dir / "ledger")

    net.start()
    with Client(net.api) as client:
        deadline = time.monotonic() + 30
        while client.status().height < height:
            assert time.monotonic() < deadline, "the lost blocks were not applied again"
            time.sleep(0.05)
        assert {h: client.block(h).hash for h in range(1, height + 1)} == hashes
        for tx_id in early + late:
            assert client.transaction(bytes.fromhex(tx_id)).status == 2  # COMMITTED
    assert net.stop() == 0
    verify = medledger("ledger", "verify", "--data-dir", str(net.data_dir), "--json")
    assert verify.rc == 0, verify.out

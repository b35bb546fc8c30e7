"""SIGKILL under load: nothing acknowledged is lost, nothing applied twice (issues 2, 3)."""

from __future__ import annotations

import signal
import threading
import time

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

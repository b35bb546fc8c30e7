"""Replication logic of a consortium in one process over the in-memory network: three
consenters and an observer (the libp2p transport is tested on its own, tests/p2p)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from node import config as config_mod
from node.daemon import Node, open_node
from node.execution.sandbox import Zygote
from node.localnet import free_base_port
from node.net import MemoryNetwork
from node.provisioning import Plan, init_consortium
from node.sdk.client import Client, Identity

NAMES = ("hosp1", "hosp2", "hosp3", "hosp4")


@pytest.fixture(scope="module")
def zygote() -> AsyncIterator[Zygote]:
    z = Zygote.start()
    yield z  # type: ignore[misc]
    z.close()


async def wait_for(predicate: object, timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.02)


async def test_three_consenters_and_an_observer_agree(tmp_path: Path, zygote: Zygote) -> None:
    root = tmp_path / "c"
    init_consortium(Plan(root, hospitals=4, consenters=3, base_port=free_base_port(count=4)))
    hub = MemoryNetwork()
    nodes: dict[str, Node] = {}
    for name in NAMES:
        cfg = config_mod.load(root / "nodes" / name / "config.toml", env={})
        services = open_node(cfg, zygote)
        nodes[name] = Node(services, hub.endpoint(name))
    doctor = Identity.load(root / "identities" / "hosp1-doctor1")
    try:
        async with trio.open_nursery() as nursery:
            for name, node in nodes.items():
                hub.endpoints[name].nursery = nursery
                await nursery.start(functools.partial(node.run, handle_signals=False))
            consenters = [nodes[n] for n in NAMES[:3]]
            await wait_for(lambda: sum(n.role == "leader" for n in consenters) == 1)

            def submit_round_robin(count: int) -> list[str]:
                results = []
                for i in range(count):
                    node = nodes[NAMES[i % 4]]
                    with Client(node.services.config.api.listen) as client:
                        res = client.submit(
                            doctor, "kv", "put", {"key": f"k{i}", "value": i}, wait=True
                        )
                    results.append(res.status)
                return results

            statuses = await trio.to_thread.run_sync(submit_round_robin, 40)
            assert statuses == ["committed"] * 40
            top = max(n.core.ledger.tip.height for n in nodes.values())
            await wait_for(lambda: all(n.core.ledger.tip.height == top for n in nodes.values()))
            for height in range(1, top + 1):
                hashes = {n.core.ledger.block_bytes(height) for n in nodes.values()}
                assert len(hashes) == 1, f"nodes differ at height {height}"
            # Certificates formed on the consenters and came with the blocks to the observer.
            await wait_for(
                lambda: all(n.core.ledger.certificate(top) is not None for n in nodes.values())
            )
            assert nodes["hosp4"].role == "observer"
            for node in nodes.values():
                node.stop()
    finally:
        for node in nodes.values():
            node.services.close()


async def test_a_diverging_consenter_halts_and_stops_serving(
    tmp_path: Path, zygote: Zygote
) -> None:
    from node.ordering.certificates import Diverged

    root = tmp_path / "c"
    init_consortium(Plan(root, hospitals=3, consenters=3, base_port=free_base_port(count=3)))
    hub = MemoryNetwork()
    nodes: dict[str, Node] = {}
    for name in NAMES[:3]:
        cfg = config_mod.load(root / "nodes" / name / "config.toml", env={})
        nodes[name] = Node(open_node(cfg, zygote), hub.endpoint(name))
    doctor = Identity.load(root / "identities" / "hosp1-doctor1")
    halted: list[BaseException] = []

    async def run_capturing(node: Node, task_status: trio.TaskStatus[None]) -> None:
        try:
            await node.run(task_status=task_status, handle_signals=False)
        except Diverged as exc:
            halted.append(exc)

    try:
        async with trio.open_nursery() as nursery:
            for name, node in nodes.items():
                hub.endpoints[name].nursery = nursery
                await nursery.start(run_capturing, node)
            await wait_for(lambda: sum(n.role == "leader" for n in nodes.values()) == 1)
            leader = next(n for n in nodes.values() if n.role == "leader")
            victim = next(n for n in nodes.values() if n.role != "leader")
            victim.core.executor.diverge_from_height = victim.core.ledger.tip.height + 1
            api = leader.services.config.api.listen

            def submit() -> str:
                with Client(api) as client:
                    return client.submit(
                        doctor, "kv", "put", {"key": "x", "value": 1}, wait=True
                    ).status

            assert await trio.to_thread.run_sync(submit) == "committed"
            await wait_for(lambda: bool(halted))
            assert victim.core.closing  # it refuses to serve anything further
            assert "certified" in str(halted[0])
            for node in nodes.values():
                if node is not victim:
                    node.stop()
    finally:
        for node in nodes.values():
            node.services.close()


LOOP = """
def spin(ctx, n):
    total = 0
    while True:
        total = total + n
"""


async def test_the_same_call_runs_out_of_gas_at_the_same_step_on_every_node(
    tmp_path: Path, zygote: Zygote
) -> None:
    """Each node executes in its own sandbox worker processes; the recorded gas must be
    identical everywhere (it is covered by results_root, so certificates depend on it)."""
    root = tmp_path / "c"
    init_consortium(Plan(root, hospitals=3, consenters=3, base_port=free_base_port(count=3)))
    hub = MemoryNetwork()
    nodes = {
        name: Node(
            open_node(config_mod.load(root / "nodes" / name / "config.toml", env={}), zygote),
            hub.endpoint(name),
        )
        for name in NAMES[:3]
    }
    leader_id = Identity.load(root / "identities" / "leader")
    doctor = Identity.load(root / "identities" / "hosp1-doctor1")
    try:
        async with trio.open_nursery() as nursery:
            for name, node in nodes.items():
                hub.endpoints[name].nursery = nursery
                await nursery.start(functools.partial(node.run, handle_signals=False))
            await wait_for(lambda: sum(n.role == "leader" for n in nodes.values()) == 1)
            api = nodes["hosp2"].services.config.api.listen

            def run_story() -> tuple[str, str, int]:
                with Client(api) as client:
                    deployed = client.submit(
                        leader_id,
                        "consortium",
                        "deploy_contract",
                        {"name": "loop", "source": LOOP},
                        wait=True,
                    )
                    assert deployed.status == "committed", deployed
                    res = client.submit(doctor, "loop", "spin", {"n": 1}, wait=True)
                    return res.code, res.tx_id, res.height

            code, _tx_id, height = await trio.to_thread.run_sync(run_story)
            assert code == "OUT_OF_GAS"
            await wait_for(lambda: all(n.core.ledger.tip.height >= height for n in nodes.values()))
            gas = set()
            for node in nodes.values():
                results = node.core.ledger.results(height)
                assert results is not None
                (result,) = [r for r in results.results if r.code == 20]  # OUT_OF_GAS
                gas.add(result.gas_used)
            assert len(gas) == 1 and gas.pop() > 0
            for node in nodes.values():
                node.stop()
    finally:
        for node in nodes.values():
            node.services.close()

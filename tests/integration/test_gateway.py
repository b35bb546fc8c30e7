"""Gateway features: resumable block and event streams, health, reflection, TLS with
client certificates."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from medledger.v1 import ledger_pb2
from netutil import Net

from node.localnet import NodeProcess, free_base_port
from node.sdk.client import Client, ClientError, Identity


def test_streams_resume_from_a_height_and_follow_new_blocks(net: Net) -> None:
    net.start()
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    with Client(net.api) as client:
        heights = [
            client.submit(doctor, "kv", "put", {"key": f"k{i}", "value": i}, wait=True).height
            for i in range(4)
        ]
        stream = client.stream_blocks(from_height=heights[1])
        got = [next(stream).block for _ in range(3)]
        assert [ledger_pb2.BlockHeader.FromString(b.header).height for b in got] == heights[1:]
        # The stream follows: a new block arrives on it.
        new = client.submit(doctor, "kv", "put", {"key": "late", "value": 9}, wait=True)
        assert ledger_pb2.BlockHeader.FromString(next(stream).block.header).height == new.height

        leader = Identity.load(net.identity("leader"))
        events = client.stream_events(from_height=heights[2], contract="kv", identity=leader)
        first = next(events)
        assert (first.height, first.contract, first.name) == (heights[2], "kv", "put")
        assert b'"k2"' in first.data
        # An unsigned subscription is refused (api.unsigned_events is off by default).
        with pytest.raises(ClientError, match="sign the subscription"):
            next(client.stream_events(from_height=1))


def test_health_and_reflection(net: Net) -> None:
    net.start()
    with grpc.insecure_channel(net.api) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "medledger.v1.Gateway"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        reply = next(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        names = {s.name for s in reply.list_services_response.service}
        assert {"medledger.v1.Gateway", "grpc.health.v1.Health"} <= names


def test_tls_with_required_client_certificate(net: Net) -> None:
    node_dir = net.root / "nodes" / "hosp1"
    # NodeProcess.wait_ready polls without TLS, so start by hand and poll with TLS.
    base = free_base_port()
    api = f"127.0.0.1:{base}"
    proc = NodeProcess("hosp1", net.config, api, net.root / "logs" / "tls.log")
    proc.start(
        {
            "MEDLEDGER_API_LISTEN": api,
            "MEDLEDGER_API_TLS": "true",
            "MEDLEDGER_API_TLS_CERTIFICATE": str(node_dir / "node.cert.pem"),
            "MEDLEDGER_API_TLS_KEY": str(node_dir / "node.key.pem"),
            "MEDLEDGER_API_CLIENT_CA": str(net.root / "ca-bundle.pem"),
            "MEDLEDGER_API_REQUIRE_CLIENT_CERTIFICATE": "true",
        }
    )
    net.node = proc
    doctor_dir = net.identity("hosp1-doctor1")
    bundle = net.root / "ca-bundle.pem"
    deadline = time.monotonic() + 30
    with Client(
        api, tls_ca=bundle, tls_identity=(doctor_dir / "cert.pem", doctor_dir / "key.pem")
    ) as client:
        while True:
            try:
                status = client.status()
                break
            except ClientError:
                assert time.monotonic() < deadline, proc.log_tail()
                time.sleep(0.05)
        assert status.node == "hosp1"
        doctor = Identity.load(doctor_dir)
        assert (
            client.submit(doctor, "kv", "put", {"key": "t", "value": 1}, wait=True).status
            == "committed"
        )
    # Without a client certificate the handshake is refused.
    with Client(api, tls_ca=bundle, timeout_s=3) as anonymous, pytest.raises(ClientError):
        anonymous.status()
    # Without TLS at all, too.
    with Client(api, timeout_s=3) as plain, pytest.raises(ClientError):
        plain.status()


def test_submit_stream_admits_batches_in_order(net: Net) -> None:
    net.start()
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    with Client(net.api) as client:
        batches = [
            [client.build(doctor, "kv", "put", {"key": f"s{b}-{i}", "value": i}) for i in range(50)]
            for b in range(4)
        ]
        outcomes = list(client.submit_stream(iter(batches)))
        assert [len(o) for o in outcomes] == [50] * 4
        assert all(r.status == "pending" for o in outcomes for r in o)
        last = outcomes[-1][-1]
        deadline = time.monotonic() + 30
        while client.transaction(bytes.fromhex(last.tx_id)).status != 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.query(doctor, "kv", "get", {"key": "s3-49"}) == 49

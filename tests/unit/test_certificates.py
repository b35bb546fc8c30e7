"""Commit certificates: votes are verified, a quorum certifies, divergence is caught."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from node.crypto import keys
from node.crypto.certs import CertificateAuthority
from node.ordering.certificates import (
    BadVote,
    CertificateCollector,
    ConsenterKeys,
    Diverged,
    sign_vote,
)

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def nodes() -> dict[str, keys.PrivateKey]:
    return {name: keys.generate_key() for name in ("n1", "n2", "n3")}


@pytest.fixture(scope="module")
def consenters(nodes: dict[str, keys.PrivateKey]) -> ConsenterKeys:
    ca = CertificateAuthority.create("hosp1", keys.generate_key(), NOW)
    return ConsenterKeys(
        {
            name: ca.issue(name, "node", key.public_key(), NOW).public_bytes(Encoding.DER)
            for name, key in nodes.items()
        }
    )


def test_quorum_of_valid_votes_certifies_once(
    nodes: dict[str, keys.PrivateKey], consenters: ConsenterKeys
) -> None:
    collector = CertificateCollector(consenters)
    h = b"\x01" * 32
    collector.derived(5, h)
    assert collector.add(sign_vote(nodes["n1"], "n1", 5, h)) is None
    cert = collector.add(sign_vote(nodes["n2"], "n2", 5, h))
    assert cert is not None and [s.node for s in cert.signatures] == ["n1", "n2"]
    assert consenters.certificate_valid(5, h, cert)
    assert not consenters.certificate_valid(5, b"\x02" * 32, cert)
    assert not consenters.certificate_valid(6, h, cert)
    assert collector.add(sign_vote(nodes["n3"], "n3", 5, h)) is None  # already certified


def test_forged_and_foreign_votes_are_refused(
    nodes: dict[str, keys.PrivateKey], consenters: ConsenterKeys
) -> None:
    collector = CertificateCollector(consenters)
    vote = sign_vote(nodes["n1"], "n1", 1, b"\x01" * 32)
    vote.node = "n2"  # n1's signature passed off as n2's
    with pytest.raises(BadVote, match="bad signature"):
        collector.add(vote)
    with pytest.raises(BadVote, match="not a consenter"):
        collector.add(sign_vote(keys.generate_key(), "mallory", 1, b"\x01" * 32))


def test_a_quorum_for_another_hash_is_divergence(
    nodes: dict[str, keys.PrivateKey], consenters: ConsenterKeys
) -> None:
    collector = CertificateCollector(consenters)
    ours, theirs = b"\x01" * 32, b"\x02" * 32
    collector.derived(9, ours)
    collector.add(sign_vote(nodes["n2"], "n2", 9, theirs))
    with pytest.raises(Diverged, match="block 9"):
        collector.add(sign_vote(nodes["n3"], "n3", 9, theirs))
    # And when the certificate forms before this node derives its own block.
    late = CertificateCollector(consenters)
    late.add(sign_vote(nodes["n2"], "n2", 3, theirs))
    late.add(sign_vote(nodes["n3"], "n3", 3, theirs))
    with pytest.raises(Diverged):
        late.derived(3, ours)

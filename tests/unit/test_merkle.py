"""Merkle root used for tx_root and results_root (RFC 6962 style)."""

from __future__ import annotations

import hashlib

import pytest

from node.crypto.hashing import EMPTY_ROOT, length_prefixed, merkle_root, sha256


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(data: bytes) -> bytes:
    return h(b"\x00" + data)


def node(left: bytes, right: bytes) -> bytes:
    return h(b"\x01" + left + right)


def rfc6962(leaves: list[bytes]) -> bytes:
    """MTH of RFC 6962 §2.1, written independently of the code under test."""
    if not leaves:
        return h(b"")
    if len(leaves) == 1:
        return leaf(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(rfc6962(leaves[:k]), rfc6962(leaves[k:]))


def items(n: int) -> list[bytes]:
    return [sha256(i.to_bytes(4, "big")) for i in range(n)]


def test_empty_root_is_the_hash_of_nothing() -> None:
    assert merkle_root([]) == EMPTY_ROOT == h(b"")


def test_one_leaf_is_its_domain_separated_hash() -> None:
    assert merkle_root([b"a"]) == leaf(b"a") != h(b"a")


def test_two_and_three_leaves() -> None:
    a, b, c = b"a", b"b", b"c"
    assert merkle_root([a, b]) == node(leaf(a), leaf(b))
    # An odd node is promoted unchanged, never paired with a copy of itself.
    assert merkle_root([a, b, c]) == node(node(leaf(a), leaf(b)), leaf(c))
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])


@pytest.mark.parametrize("n", [*range(1, 18), 31, 33, 100])
def test_matches_rfc_6962_for_every_count(n: int) -> None:
    assert merkle_root(items(n)) == rfc6962(items(n))


def test_order_matters() -> None:
    xs = items(5)
    assert merkle_root(xs) != merkle_root([xs[1], xs[0], *xs[2:]])
    assert merkle_root(xs) != merkle_root(list(reversed(xs)))


def test_every_leaf_matters() -> None:
    xs = items(7)
    root = merkle_root(xs)
    for i in range(7):
        changed = list(xs)
        changed[i] = sha256(b"other")
        assert merkle_root(changed) != root


def test_leaves_cannot_pose_as_inner_nodes() -> None:
    a, b = b"a", b"b"
    # The concatenation of the two leaf hashes, given as one leaf, must not reproduce
    # the two-leaf root (second-preimage attack without domain separation).
    assert merkle_root([leaf(a) + leaf(b)]) != merkle_root([a, b])
    # Nor may a list of inner hashes stand in for the leaves below them.
    xs = items(4)
    assert merkle_root([node(leaf(xs[0]), leaf(xs[1])), node(leaf(xs[2]), leaf(xs[3]))]) != (
        merkle_root(xs)
    )


def test_length_prefixed_is_unambiguous() -> None:
    assert length_prefixed(b"ab", b"c") != length_prefixed(b"a", b"bc")
    assert length_prefixed(b"ab", b"c") == b"\x00\x00\x00\x02ab\x00\x00\x00\x01c"
    assert length_prefixed() == b""

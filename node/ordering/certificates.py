"""Commit certificates (DESIGN §3.1 step 5), sans-IO.

Every consenter signs each block hash it derives and sends the vote to the others; a
quorum of votes for one hash is the block's certificate. A vote from a quorum for a hash
other than the one this node derived means this node diverged: it must halt loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from medledger.v1 import ledger_pb2, p2p_pb2

from node.crypto import keys

DOMAIN = b"medledger/commit/v1"


def signing_payload(height: int, block_hash: bytes) -> bytes:
    return DOMAIN + height.to_bytes(8, "big") + block_hash


class Diverged(Exception):
    """This node's block differs from the one a quorum of consenters certified."""

    def __init__(self, height: int, ours: bytes, certified: bytes) -> None:
        super().__init__(
            f"block {height}: this node derived {ours.hex()[:16]}… but a quorum of "
            f"consenters certified {certified.hex()[:16]}…; halting, the local state "
            "must not be served"
        )
        self.height = height


class BadVote(Exception):
    pass


class ConsenterKeys:
    """The node keys that may sign votes, from the genesis block's node certificates, and
    who counts at which height.

    `members(height)` names the consenters that certify block `height` (chain state
    after the block before it, node/ordering/consenter_set.py), or None while that is
    not known here yet; without it, every node given is a consenter at every height."""

    def __init__(
        self,
        certificates: Mapping[str, bytes],
        members: Callable[[int], frozenset[str] | None] | None = None,
    ) -> None:
        self.keys: dict[str, keys.PublicKey] = {}
        for name, der in certificates.items():
            key = x509.load_der_x509_certificate(der).public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
                raise ValueError(f"node {name}: only ECDSA P-256 and Ed25519 node keys")
            self.keys[name] = key
        everyone = frozenset(self.keys)
        self.members: Callable[[int], frozenset[str] | None] = members or (lambda _h: everyone)

    @property
    def quorum(self) -> int:
        """The quorum when every node given is a consenter (no `members`)."""
        return len(self.keys) // 2 + 1

    def quorum_at(self, height: int) -> int | None:
        members = self.members(height)
        return None if members is None else len(members) // 2 + 1

    def check(self, vote: p2p_pb2.CommitVote) -> None:
        """The vote is signed by the key of the node it names. Whether that node counts
        at the vote's height is decided when the votes are counted."""
        key = self.keys.get(vote.node)
        if key is None:
            raise BadVote(f"vote from {vote.node!r}, which is not a consenter")
        if not keys.verify(key, vote.signature, signing_payload(vote.height, vote.block_hash)):
            raise BadVote(f"vote of {vote.node!r} for block {vote.height} has a bad signature")

    def certificate_valid(
        self, height: int, block_hash: bytes, cert: ledger_pb2.CommitCertificate
    ) -> bool:
        members = self.members(height)
        if members is None:
            return False
        signers = set()
        for sig in cert.signatures:
            key = self.keys.get(sig.node)
            if (
                key is not None
                and sig.node in members
                and keys.verify(key, sig.signature, signing_payload(height, block_hash))
            ):
                signers.add(sig.node)
        return len(signers) >= len(members) // 2 + 1


def sign_vote(
    key: keys.PrivateKey, node: str, height: int, block_hash: bytes
) -> p2p_pb2.CommitVote:
    return p2p_pb2.CommitVote(
        height=height,
        block_hash=block_hash,
        node=node,
        signature=keys.sign(key, signing_payload(height, block_hash)),
    )


@dataclass
class _Height:
    votes: dict[bytes, dict[str, bytes]] = field(default_factory=dict)  # hash -> node -> sig
    certified: bytes | None = None


class CertificateCollector:
    """Collects verified votes per height; says when a certificate forms and whether it
    matches what this node derived."""

    def __init__(self, consenters: ConsenterKeys, keep: int = 1024) -> None:
        self.consenters = consenters
        self.keep = keep
        self._heights: dict[int, _Height] = {}
        self._ours: dict[int, bytes] = {}

    def derived(self, height: int, block_hash: bytes) -> None:
        """This node derived `block_hash` at `height` (call before its own vote)."""
        self._ours[height] = block_hash
        slot = self._heights.get(height)
        if slot is not None and slot.certified is not None and slot.certified != block_hash:
            raise Diverged(height, block_hash, slot.certified)

    def add(self, vote: p2p_pb2.CommitVote) -> ledger_pb2.CommitCertificate | None:
        """Add a vote (raises BadVote); returns the certificate the first time a quorum
        of the consenters of that height forms for a hash. Raises Diverged when that hash
        is not ours. A vote for a height whose consenter set is not known here yet is
        kept and counted by a later `add` (this node's own vote comes after it derived
        the block, when the set is known)."""
        self.consenters.check(vote)
        slot = self._heights.setdefault(vote.height, _Height())
        voters = slot.votes.setdefault(vote.block_hash, {})
        voters[vote.node] = vote.signature
        if slot.certified is not None:
            return None
        members = self.consenters.members(vote.height)
        if members is None:
            return None
        for block_hash, by_node in slot.votes.items():
            counted = {n: s for n, s in by_node.items() if n in members}
            if len(counted) >= len(members) // 2 + 1:
                return self._certify(vote.height, slot, block_hash, counted)
        return None

    def certified(self, height: int) -> bytes | None:
        """The hash a quorum certified at `height`, if any (and not yet forgotten)."""
        slot = self._heights.get(height)
        return None if slot is None else slot.certified

    def _certify(
        self, height: int, slot: _Height, block_hash: bytes, signatures: dict[str, bytes]
    ) -> ledger_pb2.CommitCertificate:
        slot.certified = block_hash
        ours = self._ours.get(height)
        if ours is not None and ours != block_hash:
            raise Diverged(height, ours, block_hash)
        self._forget_below(height - self.keep)
        return ledger_pb2.CommitCertificate(
            signatures=[
                ledger_pb2.CommitSignature(node=n, signature=s)
                for n, s in sorted(signatures.items())
            ]
        )

    def _forget_below(self, height: int) -> None:
        for h in [h for h in self._heights if h < height]:
            del self._heights[h]
        for h in [h for h in self._ours if h < height]:
            del self._ours[h]

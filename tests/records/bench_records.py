"""Throughput of the record envelope and cost of HPKE key wrapping, per suite.

Run from the checkout: `python -m tests.records.bench_records [--size-mib 20] [--out F]`.
Prints one JSON document. Not collected by pytest (timings on shared machines are noisy:
compare numbers from one run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from node.records import (
    EncryptionPrivateKey,
    HpkeSuite,
    RecordOpener,
    StreamSealer,
    Vault,
    open_record,
    seal,
)
from node.records.wrapping import unwrap_key, wrap_key

MiB = 1 << 20


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_stream(size: int) -> dict[str, float]:
    """File -> seal -> vault (fsync) -> open -> hash, one chunk at a time. Runs first, so
    the growth of peak RSS is this path's."""
    key = EncryptionPrivateKey.generate()
    recipients = {"owner": key.public_key(), "patient": key.public_key()}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "payload"
        expected = hashlib.sha256()
        with source.open("wb") as f:
            for _ in range(0, size, MiB):
                block = os.urandom(MiB)
                expected.update(block)
                f.write(block)
        vault = Vault(Path(tmp) / "vault")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        sealer = StreamSealer("application/dicom")
        with source.open("rb") as f, vault.begin_upload(sealer.record_id) as upload:
            for chunk in sealer.encrypt(f):
                upload.add_chunk(chunk)
            manifest, wrapped = sealer.finish(recipients)
            upload.commit(manifest, wrapped.values())
        put_s = time.perf_counter() - start
        start = time.perf_counter()
        opener = RecordOpener(
            vault.manifest(manifest.record_id),
            vault.get_wrapped_key(manifest.record_id, "owner"),
            "owner",
            key,
        )
        digest = hashlib.sha256()
        for plaintext in opener.decrypt(vault.iter_chunks(manifest.record_id)):
            digest.update(plaintext)
        get_s = time.perf_counter() - start
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        assert digest.digest() == expected.digest()
    mb = size / 1e6
    return {
        "payload_mb": round(mb, 1),
        "file_seal_into_vault_with_fsync_mb_s": round(mb / put_s),
        "vault_to_plaintext_verified_mb_s": round(mb / get_s),
        "peak_rss_growth_mib": round(rss_growth / 1024, 1),
    }


def bench_in_memory(size: int) -> dict[str, float]:
    key = EncryptionPrivateKey.generate()
    payload = os.urandom(size)
    recipients = {"owner": key.public_key(), "patient": key.public_key()}
    record = seal(payload, "application/dicom", recipients)
    seal_s = _best(lambda: seal(payload, "application/dicom", recipients), 5)
    open_s = _best(lambda: open_record(record, "owner", key), 5)
    mb = size / 1e6
    return {"seal_mb_s": round(mb / seal_s), "open_mb_s": round(mb / open_s)}


def bench_wrap(suite: HpkeSuite, n: int = 500) -> dict[str, float]:
    key = EncryptionPrivateKey.generate(suite)
    public = key.public_key()
    data_key, content = os.urandom(32), os.urandom(32)
    wrapped = wrap_key(data_key, "rec", content, "reader", public)
    pem_public, pem_private = public.to_pem(), key.to_pem()

    def per_op(fn: Callable[[], object]) -> float:
        def batch() -> None:
            for _ in range(n):
                fn()

        return round(_best(batch, 3) / n * 1e6, 1)

    from node.records import EncryptionPublicKey

    return {
        "wrap_us": per_op(lambda: wrap_key(data_key, "rec", content, "reader", public)),
        "unwrap_us": per_op(lambda: unwrap_key(wrapped, "rec", content, "reader", key)),
        "wrap_from_pem_us": per_op(
            lambda: wrap_key(
                data_key, "rec", content, "reader", EncryptionPublicKey.from_pem(pem_public)
            )
        ),
        "unwrap_from_pem_us": per_op(
            lambda: unwrap_key(
                wrapped, "rec", content, "reader", EncryptionPrivateKey.from_pem(pem_private)
            )
        ),
        "wrapped_key_bytes": len(wrapped.to_bytes()),
        "public_key_bytes": len(public.raw),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "stream": bench_stream(args.size_mib * MiB),
        "in_memory": bench_in_memory(args.size_mib * MiB),
        "wrap": {suite.name: bench_wrap(suite) for suite in HpkeSuite},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

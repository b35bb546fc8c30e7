"""`medledger institution|department|doctor|patient|identity|keys|consent` against a real
node process, through the real command: each verb allowed and denied (docs/permissions.md).

One node and one enrollment serve the whole module (starting and enrolling is most of
the cost); each test uses its own identities, and the suspension test reinstates.
The commands run through `node.cli.main.main` in this process (the same parser, handlers
and exit codes, without a new interpreter's second of imports per call);
`test_the_console_command_runs_as_a_process` runs the real `python -m node` process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netutil import Net, Run, medledger

from node.cli.main import main
from node.crypto import keys
from node.crypto.certs import CertificateAuthority
from node.provisioning import _write_identity
from node.sdk import identity_keys
from node.sdk.client import Client, Identity
from node.sdk.enroll import Directory, enroll


@pytest.fixture(scope="module")
def chain(
    consortium_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Net, Directory]]:
    root = tmp_path_factory.mktemp("cli-consortium") / "c"
    shutil.copytree(consortium_template, root)
    net = Net(root)
    net.start()
    try:
        with Client(net.api) as client:
            directory = enroll(client, root)
        yield net, directory
    finally:
        net.stop()


def cli(net: Net, *verb: str, who: str, args: tuple[str, ...] = ()) -> Run:
    """`medledger <verb> --node … --identity <who> --json <args>`, in this process."""
    argv = [*verb, "--node", net.api, "--identity", str(net.identity(who)), "--json", *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return Run(rc, out.getvalue(), err.getvalue())


def ok(run: Run) -> dict[str, Any]:
    assert run.rc == 0, f"rc={run.rc}\nstdout: {run.out}\nstderr: {run.err}"
    out: dict[str, Any] = run.json()
    return out


def refused(run: Run, code: str, words: str) -> dict[str, Any] | None:
    """Exit 1, the code and the contract's words on stderr; the outcome JSON on stdout
    for transactions (queries print only the reason)."""
    assert run.rc == 1, f"rc={run.rc}\nstdout: {run.out}\nstderr: {run.err}"
    assert code in run.err and words in run.err, run.err
    if not run.out:
        return None
    out: dict[str, Any] = run.json()
    assert out["status"] == "invalid" and out["code"] == code, out
    return out


def new_identity(net: Net, institution: str, name: str, role: str) -> Path:
    """An identity folder issued by the institution's CA, as its IT team would."""
    cas = net.root / "cas" / institution
    from cryptography import x509

    ca = CertificateAuthority(
        institution,
        keys.load_private(cas / "ca.key.pem"),
        x509.load_pem_x509_certificate((cas / "ca.cert.pem").read_bytes()),
    )
    folder = net.identity(name)
    _write_identity(folder, ca, name, role, dt.datetime.now(dt.UTC))
    return folder


def test_institutions_are_the_leaders(chain: tuple[Net, Directory]) -> None:
    net, _d = chain
    admit = ("--institution", "hosp9", "--name", "Hospital 9", "--tier", "primary")
    refused(
        cli(net, "institution", "admit", who="hosp1-doctor1", args=(*admit, "--region", "r1")),
        "PERMISSION_DENIED",
        "only the consortium leader may do this",
    )
    out = ok(cli(net, "institution", "admit", who="leader", args=(*admit, "--region", "r1")))
    assert out["status"] == "committed" and out["code"] == "VALID" and out["height"] > 0
    assert out["result"]["status"] == "active" and out["result"]["tier"] == "primary"

    suspend = ("--institution", "hosp2", "--reason", "audit")
    refused(
        cli(net, "institution", "suspend", who="hosp1-admin", args=suspend),
        "PERMISSION_DENIED",
        "only the consortium leader",
    )
    out = ok(cli(net, "institution", "suspend", who="leader", args=suspend))
    try:
        assert out["result"]["status"] == "suspended"
        # A suspended institution's admin, doctors and patients can do nothing.
        refused(
            cli(net, "consent", "list", who="hosp2-doctor1"),
            "PERMISSION_DENIED",
            "'hosp2' is not an active member",
        )
        refused(
            cli(
                net,
                "consent",
                "grant",
                who="hosp2-patient1",
                args=("--grantee", "hosp1-doctor1", "--records", "*", "--purpose", "treatment"),
            ),
            "PERMISSION_DENIED",
            "'hosp2' is not an active member",
        )
        dept = ("--department", "d09", "--name", "Radiology")
        refused(
            cli(net, "department", "register", who="hosp2-admin", args=dept),
            "PERMISSION_DENIED",
            "'hosp2' is suspended",
        )
        refused(
            cli(net, "keys", "register", who="hosp2-patient2"),
            "PERMISSION_DENIED",
            "'hosp2' is suspended",
        )
    finally:
        out = ok(
            cli(net, "institution", "reinstate", who="leader", args=("--institution", "hosp2"))
        )
    assert out["result"]["status"] == "active"
    assert ok(cli(net, "department", "register", who="hosp2-admin", args=dept))["result"]["created"]


def test_admins_register_departments_doctors_and_patients(chain: tuple[Net, Directory]) -> None:
    net, d = chain
    dept = ("--department", "d07", "--name", "Cardiology")
    refused(
        cli(net, "department", "register", who="hosp1-doctor1", args=dept),
        "PERMISSION_DENIED",
        "only an institution's admin",
    )
    out = ok(cli(net, "department", "register", who="hosp1-admin", args=dept))
    assert out["result"]["created"] is True
    assert out["result"]["department"]["accepts_referrals"] is True

    # A doctor named by folder name; registering again moves them to another department.
    move = ("--doctor", "hosp1-doctor2", "--name", "hosp1-doctor2", "--department", "d07")
    out = ok(cli(net, "doctor", "register", who="hosp1-admin", args=move))
    assert out["result"]["identity"] == d["hosp1-doctor2"].id
    assert out["result"]["department"] == "d07"
    refused(
        cli(net, "doctor", "register", who="hosp2-admin", args=(*move[:4], "--department", "d01")),
        "PERMISSION_DENIED",
        "registered to another role or institution",
    )
    refused(
        cli(net, "doctor", "register", who="hosp1-admin", args=(*move[:4], "--department", "d99")),
        "CONTRACT_ERROR",
        "no department 'd99'",
    )

    # A patient the hospital just issued a certificate to, named by folder path.
    folder = new_identity(net, "hosp1", "hosp1-patient3", "patient")
    patient = ("--patient", str(folder), "--pseudonym", "pt-cli-test-0003")
    refused(
        cli(net, "patient", "register", who="hosp1-doctor1", args=patient),
        "PERMISSION_DENIED",
        "only an institution's admin",
    )
    refused(
        cli(
            net,
            "patient",
            "register",
            who="hosp1-admin",
            args=(*patient[:2], "--pseudonym", "110101199003071234"),
        ),
        "CONTRACT_ERROR",
        "looks like an id number",
    )
    out = ok(cli(net, "patient", "register", who="hosp1-admin", args=patient))
    assert out["result"]["identity"] == Identity.load(folder).id
    assert out["result"]["pseudonym"] == "pt-cli-test-0003"
    out = ok(cli(net, "keys", "register", who="hosp1-patient3"))
    assert out["result"]["version"] == 1


def test_a_revoked_certificate_is_refused_from_the_next_block(
    chain: tuple[Net, Directory],
) -> None:
    net, d = chain
    target = ("--target", "hosp2-doctor2", "--reason", "left the hospital")
    refused(
        cli(net, "identity", "revoke", who="hosp2-doctor1", args=target),
        "PERMISSION_DENIED",
        "only an institution's admin",
    )
    refused(
        cli(net, "identity", "revoke", who="hosp1-admin", args=target),
        "PERMISSION_DENIED",
        "only revoke identities of its own institution",
    )
    assert ok(cli(net, "consent", "list", who="hosp2-doctor2"))["count"] == 0
    out = ok(cli(net, "identity", "revoke", who="hosp2-admin", args=target))
    assert out["result"]["identity"] == d["hosp2-doctor2"].id
    # Committed in block `height`; from the next one the node refuses the certificate.
    enc_key = (net.identity("hosp2-doctor2") / "enc.key").read_bytes()
    refused(cli(net, "keys", "rotate", who="hosp2-doctor2"), "CREATOR_REVOKED", "revoked")
    assert (net.identity("hosp2-doctor2") / "enc.key").read_bytes() == enc_key
    refused(cli(net, "consent", "list", who="hosp2-doctor2"), "CREATOR_REVOKED", "revoked")
    info = ok(cli(net, "identity", "show", who="hosp2-admin", args=("--target", "hosp2-doctor2")))
    assert info["revoked"] is True and info["registration"]["status"] == "revoked"


def test_keys_rotate_keeps_the_old_private_key(chain: tuple[Net, Directory]) -> None:
    net, d = chain
    before = ok(cli(net, "keys", "show", who="hosp1-doctor1"))
    assert before["version"] == 1 and before["verified"] and before["private_key_held"]
    refused(cli(net, "keys", "register", who="hosp1-doctor1"), "CONTRACT_ERROR", "use rotate_key")

    out = ok(cli(net, "keys", "rotate", who="hosp1-doctor1", args=("--suite", "X25519")))
    assert out["result"]["version"] == 2 and out["result"]["suite"] == "X25519"
    after = ok(cli(net, "keys", "show", who="hosp1-doctor1"))
    assert after["version"] == 2 and after["verified"] and after["private_key_held"]
    assert [h["version"] for h in after["history"]] == [1, 2]
    assert all(h["verified"] and h["private_key_held"] for h in after["history"])
    held = identity_keys.private_keys(Identity.load(net.identity("hosp1-doctor1")))
    assert bytes.fromhex(before["fingerprint"]) in held
    assert bytes.fromhex(after["fingerprint"]) in held

    # Anyone can check another identity's key against its certificate.
    other = ok(cli(net, "keys", "show", who="hosp2-patient1", args=("--of", d["hosp1-doctor1"].id)))
    assert other["fingerprint"] == after["fingerprint"] and "private_key_held" not in other
    run = cli(net, "keys", "show", who="hosp1-doctor1", args=("--of", "leader"))
    assert run.rc == 1 and "has registered no encryption key" in run.err, run.err
    run = cli(net, "keys", "show", who="hosp1-doctor1", args=("--of", "nobody-here"))
    assert run.rc == 2 and "neither a 64-hex identity id nor an identity folder" in run.err


def test_consent_grant_list_revoke(chain: tuple[Net, Directory]) -> None:
    net, d = chain
    grant = ("--grantee", "hosp2-doctor1", "--records", "*", "--purpose", "referral")
    refused(
        cli(net, "consent", "grant", who="hosp1-doctor1", args=grant),
        "PERMISSION_DENIED",
        "only the patient may grant access to all their records",
    )
    refused(
        cli(
            net,
            "consent",
            "grant",
            who="hosp1-doctor1",
            args=(*grant[:2], "--records", "r-none", "--purpose", "referral"),
        ),
        "CONTRACT_ERROR",
        "record 'r-none' does not exist",
    )
    refused(
        cli(net, "consent", "grant", who="hosp1-admin", args=grant),
        "PERMISSION_DENIED",
        "role 'institution' may not do this",
    )
    out = ok(cli(net, "consent", "grant", who="hosp1-patient1", args=(*grant, "--days", "30")))
    granted = out["result"]
    assert granted["grantee"] == d["hosp2-doctor1"].id and granted["records"] == "*"
    assert granted["patient"] == d.pseudonyms["hosp1-patient1"] and out["shared"] == {}
    inst = ("--grantee", "institution:hosp2", "--records", "*", "--purpose", "treatment")
    second = ok(cli(net, "consent", "grant", who="hosp1-patient1", args=inst))["result"]["id"]

    mine = ok(cli(net, "consent", "list", who="hosp1-patient1"))
    assert mine["patient"] == d.pseudonyms["hosp1-patient1"]
    assert {g["id"] for g in mine["grants"]} == {granted["id"], second}
    received = ok(cli(net, "consent", "list", who="hosp2-doctor1"))
    assert {g["id"] for g in received["grants"]} == {granted["id"], second}
    refused(
        cli(net, "consent", "list", who="hosp1-patient2", args=("--patient", "hosp1-patient1")),
        "PERMISSION_DENIED",
        "a patient lists only their own grants",
    )

    revoke = ("--grant", granted["id"])
    refused(
        cli(net, "consent", "revoke", who="hosp2-doctor1", args=revoke),
        "PERMISSION_DENIED",
        "only the patient or the granter may revoke",
    )
    out = ok(cli(net, "consent", "revoke", who="hosp1-patient1", args=revoke))
    assert out["result"]["status"] == "revoked"
    refused(
        cli(net, "consent", "revoke", who="hosp1-patient1", args=revoke),
        "CONTRACT_ERROR",
        "already revoked",
    )
    statuses = {
        g["id"]: g["status"]
        for g in ok(cli(net, "consent", "list", who="hosp1-patient1"))["grants"]
    }
    assert statuses == {granted["id"]: "revoked", second: "active"}


def test_the_console_command_runs_as_a_process(chain: tuple[Net, Directory]) -> None:
    net, _d = chain
    caller = ("--node", net.api, "--json", "--identity")
    show = ("institution", "show", "--institution", "hosp1", *caller)
    run = medledger(*show, str(net.identity("hosp1-doctor1")))
    assert run.rc == 0 and run.json()["tier"] == "tertiary", run.err
    admit = ("institution", "admit", "--institution", "hosp8", "--name", "H8", "--tier", "primary")
    run = medledger(*admit, "--region", "r", *caller, str(net.identity("hosp1-doctor1")))
    assert run.rc == 1 and "PERMISSION_DENIED: only the consortium leader" in run.err
    assert run.json()["status"] == "invalid"

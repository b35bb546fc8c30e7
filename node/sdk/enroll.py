"""Enrolling the demo identities of `medledger init-consortium` on a running network.

Genesis admits the institutions and names the leader and the regulator; everything else
is ordinary transactions: each institution's admin registers two departments, its two
doctors (doctor1 in `d01`, doctor2 in `d02`) and its two patients (under consortium
pseudonyms), and every doctor and patient registers its encryption key. Used by
`medledger demo`, the integration tests and the benchmarks; a hospital does the same
through its own HIS with `medledger department/doctor/patient register` and `keys
register`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from node.sdk import identity_keys
from node.sdk.client import Client, ClientError, Identity, SubmitResult

DEPARTMENTS = (("d01", "Internal medicine"), ("d02", "Rehabilitation"))


def pseudonym_of(name: str) -> str:
    """The demo's consortium pseudonym of a patient identity folder name."""
    return "pt-" + hashlib.sha256(b"medledger-demo-patient:" + name.encode()).hexdigest()[:16]


@dataclass
class Directory:
    """Who is who after enrollment, by identity folder name."""

    root: Path
    identities: dict[str, Identity] = field(default_factory=dict)
    pseudonyms: dict[str, str] = field(default_factory=dict)
    departments: dict[str, str] = field(default_factory=dict)  # doctor name -> department
    institutions: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Identity:
        if name not in self.identities:
            self.identities[name] = Identity.load(self.root / "identities" / name)
        return self.identities[name]

    def institution_of(self, name: str) -> str:
        return name.split("-", 1)[0]


def load_directory(consortium_dir: Path) -> Directory:
    """The demo identities of an init-consortium folder, without touching the chain."""
    directory = Directory(consortium_dir)
    ids = consortium_dir / "identities"
    directory.institutions = sorted(
        (p.name[: -len("-admin")] for p in ids.glob("*-admin")), key=lambda s: (len(s), s)
    )
    for inst in directory.institutions:
        for n in (1, 2):
            directory.pseudonyms[f"{inst}-patient{n}"] = pseudonym_of(f"{inst}-patient{n}")
            directory.departments[f"{inst}-doctor{n}"] = DEPARTMENTS[n - 1][0]
    return directory


def _check(results: list[SubmitResult], what: str) -> None:
    for res in results:
        if res.status != "committed" or res.code != "VALID":
            raise ClientError(f"{what}: {res.status} {res.code}: {res.message}")


def enroll(client: Client, consortium_dir: Path, timeout_s: float = 120.0) -> Directory:
    """Registers departments, doctors, patients and encryption keys of every demo
    institution, in three rounds (each waits for the previous one to commit)."""
    d = load_directory(consortium_dir)
    raws: list[bytes] = []
    for inst in d.institutions:
        admin = d[f"{inst}-admin"]
        for dept, name in DEPARTMENTS:
            args = {"department": dept, "name": name, "accepts_referrals": True}
            raws.append(client.build(admin, "consortium", "register_department", args))
    _check(client.submit_all(raws, timeout_s), "registering departments")
    raws = []
    for inst in d.institutions:
        admin = d[f"{inst}-admin"]
        for n in (1, 2):
            doctor = f"{inst}-doctor{n}"
            args = {"identity": d[doctor].id, "name": doctor, "department": d.departments[doctor]}
            raws.append(client.build(admin, "consortium", "register_doctor", args))
            patient = f"{inst}-patient{n}"
            args = {"identity": d[patient].id, "pseudonym": d.pseudonyms[patient]}
            raws.append(client.build(admin, "consortium", "register_patient", args))
    _check(client.submit_all(raws, timeout_s), "registering doctors and patients")
    raws = []
    chain_id = client.chain_id()
    for name in [*d.departments, *d.pseudonyms]:
        ident = d[name]
        public = identity_keys.current_public_key(ident)
        args = identity_keys.registration_args(ident, chain_id, public)
        raws.append(client.build(ident, "consortium", "register_key", args))
    _check(client.submit_all(raws, timeout_s), "registering encryption keys")
    return d

"""The systemd units are accepted by systemd-analyze verify (issue 8)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing (scripts/test installs it)",
)
@pytest.mark.parametrize(
    "unit,name",
    [("medledger.service", "medledger.service"), ("medledger@.service", "medledger@hosp1.service")],
)
def test_units_verify(unit: str, name: str, tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's medledger.
    medledger = Path(sys.executable).parent / "medledger"
    text = (DEPLOY / unit).read_text()
    assert "/opt/medledger/venv/bin/medledger" in text
    (tmp_path / name).write_text(text.replace("/opt/medledger/venv/bin/medledger", str(medledger)))
    run = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Overall exposure level" in security.stdout
    level = float(security.stdout.split("Overall exposure level")[1].split(":")[1].split()[0])
    assert level <= 2.0, security.stdout

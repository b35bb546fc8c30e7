"""`medledger referral/consult/followup/audit ...`: the referral workflow (DESIGN §7)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_commands(sub: Any, node_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds this module's sub-commands to the `medledger` parser."""

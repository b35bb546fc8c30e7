"""`medledger record put/get/share/erase`: patient records through the vault (DESIGN §6, §8)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_commands(sub: Any, node_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds this module's sub-commands to the `medledger` parser."""

"""`medledger institution|department|doctor|patient|keys|consent ...`: membership and keys."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_commands(sub: Any, node_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds this module's sub-commands to the `medledger` parser."""

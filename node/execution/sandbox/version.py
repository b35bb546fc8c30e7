"""The sandbox engine's version, recorded on-chain next to each contract's code hash.

Bump it whenever anything that can change a contract's outcome or `gas_used` changes: the
checker's rules, the instrumentation, gas costs, the guarded builtins, the `ctx` API, or
the CPython minor version the workers run (hashing of `str` for set order, int/str limits).
Two nodes agree on a transaction only if they run the same code under the same version.
"""

from __future__ import annotations

# 2: `ctx.range(prefix, limit=N)`. A module deployed for another version is refused, so a
# node that does not know the new call halts instead of disagreeing with the others.
ENGINE_VERSION = 2

"""The OS-isolated, deterministic, metered contract engine (DESIGN §5, issue 5).

Start-up and shutdown, in the node:

    zygote = Zygote.start()            # first thing in main(), before any thread exists
    engine = SandboxEngine(zygote)     # implements ContractEngine (+ execute_batch)
    ...
    engine.close()
    zygote.close()                     # kills remaining workers, waits for the zygote

See README.md in this folder for the rules contracts are held to and the known gaps.
"""

from node.execution.sandbox.confine import WorkerLimits
from node.execution.sandbox.errors import (
    NondeterministicExecution,
    SandboxUnavailable,
)
from node.execution.sandbox.host import SandboxEngine
from node.execution.sandbox.inprocess import InProcessMeteredEngine
from node.execution.sandbox.launcher import Zygote
from node.execution.sandbox.version import ENGINE_VERSION

__all__ = [
    "ENGINE_VERSION",
    "InProcessMeteredEngine",
    "NondeterministicExecution",
    "SandboxEngine",
    "SandboxUnavailable",
    "WorkerLimits",
    "Zygote",
]

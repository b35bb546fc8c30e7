"""Deploy-time checks: hostile modules are refused with the line and the rule."""

from __future__ import annotations

import pytest

from node.execution.sandbox.checker import check_source
from node.execution.types import ContractRejected
from tests.sandbox.sandbox_support import KV_SOURCE

REFUSED = {
    "import os": ("import os\ndef f(ctx):\n    return 1\n", "line 1", "import of 'os'"),
    "import sys": ("def f(ctx):\n    import sys\n", "line 2", "import of 'sys'"),
    "from ctypes": ("from ctypes import CDLL\n", "line 1", "import of 'ctypes'"),
    "math.exp": ("from math import exp\n", "line 1", "deterministic subset"),
    "open": ("def f(ctx):\n    return open('/etc/passwd')\n", "line 2", "'open'"),
    "eval": ("def f(ctx):\n    return eval('1')\n", "line 2", "'eval'"),
    "exec": ("def f(ctx):\n    exec('x=1')\n", "line 2", "'exec'"),
    "compile": ("def f(ctx):\n    compile('1', 'x', 'eval')\n", "line 2", "'compile'"),
    "getattr": ("def f(ctx):\n    return getattr(ctx, 'x')\n", "line 2", "'getattr'"),
    "type": ("def f(ctx):\n    return type(ctx)\n", "line 2", "'type'"),
    "globals": ("def f(ctx):\n    return globals()\n", "line 2", "'globals'"),
    "__import__": ("def f(ctx):\n    return __import__('os')\n", "line 2", "'__'"),
    "__builtins__": ("def f(ctx):\n    return __builtins__\n", "line 2", "'__'"),
    "subclasses": (
        "def f(ctx):\n    return ().__class__.__base__.__subclasses__()\n",
        "line 2",
        "dunder",
    ),
    "private attribute": ("def f(ctx):\n    return ctx._writes\n", "line 2", "private"),
    "generator frame": (
        "def f(ctx):\n    g = (x for x in [1])\n    return g.gi_frame\n",
        "line 3",
        "gi_frame",
    ),
    "traceback": (
        "def f(ctx):\n    try:\n        1 / 0\n    except Exception as e:\n"
        "        return e.__traceback__\n",
        "line 5",
        "__traceback__",
    ),
    "traceback frame": (
        "def f(ctx):\n    try:\n        1 / 0\n    except Exception as e:\n"
        "        return e.with_traceback(None)\n",
        "line 5",
        "with_traceback",
    ),
    "lambda code": ("def f(ctx):\n    return (lambda: 0).__code__\n", "line 2", "__code__"),
    "format field access": (
        "def f(ctx):\n    return '{0.__class__}'.format(ctx)\n",
        "line 2",
        "'format'",
    ),
    "format_map": ("def f(ctx):\n    return '{x}'.format_map({})\n", "line 2", "'format_map'"),
    "yield": ("def f(ctx):\n    yield 1\n", "line 2", "generators"),
    "class": ("class A:\n    pass\n", "line 1", "class"),
    "global": ("X = 1\ndef f(ctx):\n    global X\n    X = 2\n", "line 3", "global"),
    "nonlocal": (
        "def f(ctx):\n    x = 1\n    def g():\n        nonlocal x\n",
        "line 4",
        "nonlocal",
    ),
    "async": ("async def f(ctx):\n    pass\n", "line 1", "async"),
    "mutable global": ("CACHE = {}\ndef f(ctx):\n    CACHE['x'] = 1\n", "line 1", "constants"),
    "mutable default": ("def f(ctx, seen=[]):\n    seen.append(1)\n", "line 1", "default"),
    "bare except": (
        "def f(ctx):\n    try:\n        pass\n    except:\n        pass\n",
        "line 4",
        "bare",
    ),
    "except BaseException": (
        "def f(ctx):\n    try:\n        pass\n    except BaseException:\n        pass\n",
        "line 4",
        "cannot catch",
    ),
    "finally": (
        "def f(ctx):\n    try:\n        pass\n    finally:\n        return 1\n",
        "line 2",
        "finally",
    ),
    "attribute store": ("def f(ctx):\n    ctx.caller = 1\n", "line 2", "assigned"),
    "method reference": ("def f(ctx):\n    j = ','.join\n", "line 2", "only be called"),
    "format spec": ("def f(ctx):\n    return f'{1:>999999999}'\n", "line 2", "format spec"),
    "decorator": ("def d(x):\n    return x\n@d\ndef f(ctx):\n    pass\n", "line 4", "decorator"),
    "walrus": ("def f(ctx):\n    return (y := 1)\n", "line 2", ":="),
    "with": ("def f(ctx):\n    with ctx:\n        pass\n", "line 2", "with"),
    "public without ctx": ("def f(x):\n    pass\n", "line 1", "ctx first"),
    "syntax error": ("def f(ctx:\n", "line 1", "syntax error"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_module_is_refused_naming_line_and_rule(case: str) -> None:
    source, line, rule = REFUSED[case]
    with pytest.raises(ContractRejected) as refused:
        check_source(source)
    message = str(refused.value)
    assert message.startswith(line + ":"), message
    assert rule in message, message


def test_kv_and_ordinary_contract_code_pass() -> None:
    checked = check_source(KV_SOURCE)
    assert set(checked.entry_points) == {"put", "get", "delete", "list_keys"}
    source = """
from __future__ import annotations
import math
from math import isqrt
DEPENDENCIES = ("consortium", "consent")
LIMITS = (("a", 1), ("b", -2))
ROLES = frozenset({"doctor", "patient"})

def _helper(items: list[int]) -> int:
    return sum(x * 2 for x in items if x > 0)

def refer(ctx, patient: str, *, urgent: bool = False) -> dict:
    member = ctx.get_from("consortium", "member/" + ctx.caller.institution)
    try:
        n = int(patient[-1])
    except (ValueError, IndexError) as exc:
        raise ValueError(f"bad patient {patient!r}") from exc
    total = _helper([n, isqrt(16), math.floor(2.5)])
    ctx.put(patient, {"total": total, "urgent": urgent, "member": member})
    return sorted(ROLES, key=lambda r: len(r))
"""
    checked = check_source(source)
    assert checked.dependencies == ("consortium", "consent")
    assert checked.entry_points["refer"].required == {"patient"}
    assert checked.entry_points["refer"].optional == {"urgent"}

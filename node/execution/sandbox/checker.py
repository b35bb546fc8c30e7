"""Deploy-time checks: the restricted Python subset contracts are written in.

The checker is an allow-list over the AST. Anything not listed is refused with
`ContractRejected("line N: rule: ...")`. The subset is chosen so that, together with the
guarded builtins of `guards.py`, a contract cannot reach interpreter internals:

- no names beginning with `__` (dunders, and the engine's own `__ml_*` helpers);
- attribute access only to a fixed list of names (ctx API, str/list/dict methods, the
  safe `math` subset); attributes are never assigned or deleted;
- no classes, decorators, `global`/`nonlocal`, `yield`, `async`, `with`, `finally`,
  walrus or `match`: fewer ways to keep state, smuggle frames or swallow signals;
- `except` only names listed `Exception` subclasses, so `OutOfGas` (a BaseException)
  cannot be caught;
- imports only of `math` (the engine's deterministic subset) at module level;
- module-level names bound only to constants, tuples and frozensets of constants, so no
  state survives from one call to the next; the same for default argument values;
- f-strings without format specs (a spec like `{x:>999999999}` allocates unmetered).

Why no classes: they bring metaclasses, descriptors and `__init__`/`__del__` hooks, each a
way around the metering or into the interpreter. Contracts use dicts and tuples instead.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from node.execution.types import ContractRejected

ALLOWED_IMPORTS = frozenset({"math"})

# The safe subset of `math` (see guards.SAFE_MATH): exact or correctly rounded operations
# only; libm functions (exp, log, sin, pow...) differ between platforms and are left out.
MATH_NAMES = frozenset(
    {
        "floor",
        "ceil",
        "trunc",
        "isqrt",
        "gcd",
        "sqrt",
        "fabs",
        "isfinite",
        "isnan",
        "isinf",
        "pi",
        "e",
        "inf",
    }
)

CTX_ATTRIBUTES = frozenset(
    {
        "get",
        "put",
        "delete",
        "range",
        "get_from",
        "emit",
        "caller",
        "tx_id",
        "block_time",
        "height",
        "identity",
        "name",
        "role",
        "institution",
    }
)
DICT_METHODS = frozenset(
    {"get", "items", "keys", "values", "setdefault", "pop", "update", "copy", "clear"}
)
LIST_METHODS = frozenset(
    {
        "append",
        "extend",
        "pop",
        "insert",
        "remove",
        "index",
        "count",
        "sort",
        "reverse",
        "copy",
        "clear",
    }
)
STR_METHODS = frozenset(
    {
        "startswith",
        "endswith",
        "split",
        "rsplit",
        "strip",
        "lstrip",
        "rstrip",
        "lower",
        "upper",
        "join",
        "replace",
        "find",
        "rfind",
        "isdigit",
        "isalnum",
        "isalpha",
        "isspace",
        "islower",
        "isupper",
        "partition",
        "rpartition",
        "splitlines",
        "removeprefix",
        "removesuffix",
        "count",
        "index",
    }
)
ALLOWED_ATTRIBUTES = CTX_ATTRIBUTES | DICT_METHODS | LIST_METHODS | STR_METHODS | MATH_NAMES

# Methods whose cost grows with the size of their operands: the instrumentation routes
# calls to them through a size-charging guard, so they may only appear as `obj.m(...)`.
SIZED_METHODS = frozenset(
    {
        "join",
        "replace",
        "split",
        "rsplit",
        "splitlines",
        "extend",
        "update",
        "copy",
        "insert",
        "index",
        "count",
        "remove",
        "find",
        "rfind",
        "sort",
        "pop",
    }
)

CATCHABLE = frozenset(
    {
        "Exception",
        "ValueError",
        "KeyError",
        "IndexError",
        "TypeError",
        "ZeroDivisionError",
        "ArithmeticError",
        "LookupError",
        "AssertionError",
        "OverflowError",
    }
)

# Names refused outright with a clear message (the runtime does not provide them either).
FORBIDDEN_NAMES = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "hasattr",
        "globals",
        "locals",
        "vars",
        "dir",
        "type",
        "object",
        "super",
        "breakpoint",
        "input",
        "print",
        "memoryview",
        "bytearray",
        "classmethod",
        "staticmethod",
        "property",
        "help",
        "id",
        "hash",
        "iter",
        "next",
        "aiter",
        "anext",
        "callable",
        "issubclass",
        "format",
        "repr",
        "ascii",
        "pow",
        "exit",
        "quit",
        "BaseException",
        "SystemExit",
        "KeyboardInterrupt",
        "GeneratorExit",
    }
)

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Module,
    ast.Expr,
    ast.FunctionDef,
    ast.arguments,
    ast.arg,
    ast.Return,
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.For,
    ast.While,
    ast.If,
    ast.Raise,
    ast.Try,
    ast.ExceptHandler,
    ast.Assert,
    ast.Pass,
    ast.Break,
    ast.Continue,
    ast.Import,
    ast.ImportFrom,
    ast.alias,
    ast.Delete,
    ast.IfExp,
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.Call,
    ast.keyword,
    ast.Lambda,
    ast.Dict,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.comprehension,
    ast.Constant,
    ast.Name,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.Starred,
    ast.JoinedStr,
    ast.FormattedValue,
    ast.Load,
    ast.Store,
    ast.Del,
    ast.boolop,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
)

_FORBIDDEN_NODE_RULES: dict[type[ast.AST], str] = {
    ast.ClassDef: "no class definitions (use dicts and tuples)",
    ast.AsyncFunctionDef: "no async functions",
    ast.Await: "no await",
    ast.Yield: "no generators (yield)",
    ast.YieldFrom: "no generators (yield from)",
    ast.Global: "no global statements (no state across calls)",
    ast.Nonlocal: "no nonlocal statements",
    ast.With: "no with statements",
    ast.AsyncWith: "no async with",
    ast.AsyncFor: "no async for",
    ast.NamedExpr: "no assignment expressions (:=)",
    ast.Match: "no match statements",
    ast.TryStar: "no except* clauses",
}


@dataclass(frozen=True)
class EntryPoint:
    """A public contract function and the argument names it accepts (after `ctx`)."""

    name: str
    required: frozenset[str]
    optional: frozenset[str]
    takes_any: bool  # has **kwargs


@dataclass(frozen=True)
class CheckedModule:
    tree: ast.Module
    dependencies: tuple[str, ...]
    entry_points: dict[str, EntryPoint]


def _reject(node: ast.AST, rule: str) -> ContractRejected:
    line = getattr(node, "lineno", 0)
    return ContractRejected(f"line {line}: {rule}")


def check_source(source: str, filename: str = "<contract>") -> CheckedModule:
    """Parse and check a contract module; raises ContractRejected naming line and rule."""
    try:
        tree = ast.parse(source, filename=filename, mode="exec")
    except SyntaxError as exc:
        raise ContractRejected(f"line {exc.lineno or 0}: syntax error: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise ContractRejected(f"line 0: source not parseable: {exc}") from None
    _check_nodes(tree)
    dependencies = _check_module_level(tree)
    entry_points = _entry_points(tree)
    return CheckedModule(tree=tree, dependencies=dependencies, entry_points=entry_points)


def _check_nodes(tree: ast.Module) -> None:
    call_funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        rule = _FORBIDDEN_NODE_RULES.get(type(node))
        if rule is not None:
            raise _reject(node, rule)
        if not isinstance(node, _ALLOWED_NODES):
            raise _reject(node, f"syntax not allowed in contracts: {type(node).__name__}")
        _check_node(node, call_funcs)


def _check_identifier(node: ast.AST, name: str) -> None:
    if name.startswith("__"):
        raise _reject(node, f"names beginning with '__' are not allowed: {name!r}")
    if name in FORBIDDEN_NAMES:
        raise _reject(node, f"forbidden name {name!r} (reflection, I/O or unmetered builtin)")


def _check_node(node: ast.AST, call_funcs: set[int]) -> None:
    if isinstance(node, ast.Name):
        _check_identifier(node, node.id)
    elif isinstance(node, ast.arg):
        _check_identifier(node, node.arg)
    elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
        if isinstance(node, ast.FunctionDef):
            _check_identifier(node, node.name)
            if node.decorator_list:
                raise _reject(node, "no decorators")
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None and not _is_constant(default):
                raise _reject(default, "default argument values must be constants")
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise _reject(node, f"no access to private or dunder attributes: {node.attr!r}")
        if node.attr not in ALLOWED_ATTRIBUTES:
            raise _reject(node, f"attribute not in the allowed list: {node.attr!r}")
        if not isinstance(node.ctx, ast.Load):
            raise _reject(node, "attributes cannot be assigned or deleted")
        if node.attr in SIZED_METHODS and id(node) not in call_funcs:
            raise _reject(node, f"method {node.attr!r} may only be called, not referenced")
    elif isinstance(node, ast.keyword):
        if node.arg is not None and node.arg.startswith("__"):
            raise _reject(node, f"keyword names beginning with '__' not allowed: {node.arg}")
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        _check_import(node)
    elif isinstance(node, ast.ExceptHandler):
        _check_handler(node)
    elif isinstance(node, ast.Try):
        if node.finalbody:
            raise _reject(node, "no finally clauses (a finally can cancel the engine's signals)")
    elif isinstance(node, ast.FormattedValue):
        if node.format_spec is not None:
            raise _reject(node, "no format specs in f-strings (widths allocate unmetered)")
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bytes):
            raise _reject(node, "no bytes literals (state values are JSON)")
        if isinstance(node.value, complex):
            raise _reject(node, "no complex numbers")


def _check_import(node: ast.Import | ast.ImportFrom) -> None:
    if isinstance(node, ast.ImportFrom):
        if node.module == "__future__" and all(a.name == "annotations" for a in node.names):
            return
        if node.level or node.module not in ALLOWED_IMPORTS:
            raise _reject(node, f"import of {node.module!r} not allowed (allowed: math)")
        for alias in node.names:
            if alias.name not in MATH_NAMES:
                raise _reject(node, f"math.{alias.name} is not in the deterministic subset")
            _check_identifier(node, alias.asname or alias.name)
        return
    for alias in node.names:
        if alias.name not in ALLOWED_IMPORTS:
            raise _reject(node, f"import of {alias.name!r} not allowed (allowed: math)")
        _check_identifier(node, alias.asname or alias.name)


def _check_handler(node: ast.ExceptHandler) -> None:
    if node.type is None:
        raise _reject(node, "bare except is not allowed; name the exceptions")
    names = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
    for name in names:
        if not isinstance(name, ast.Name) or name.id not in CATCHABLE:
            shown = ast.unparse(name)
            raise _reject(node, f"cannot catch {shown!r}; allowed: {', '.join(sorted(CATCHABLE))}")


def _is_constant(node: ast.expr) -> bool:
    """Literal constants, tuples of them, frozenset(...) of them, and signed numbers."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple):
        return all(_is_constant(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "frozenset"
        and not node.keywords
        and len(node.args) <= 1
    ):
        if not node.args:
            return True
        arg = node.args[0]
        return isinstance(arg, (ast.Set, ast.Tuple)) and all(_is_constant(e) for e in arg.elts)
    return False


def _check_module_level(tree: ast.Module) -> tuple[str, ...]:
    """Module-level statements bind only immutable values; returns DEPENDENCIES."""
    dependencies: tuple[str, ...] = ()
    for index, stmt in enumerate(tree.body):
        if isinstance(stmt, (ast.FunctionDef, ast.Import, ast.ImportFrom)):
            continue
        if index == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # docstring
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            value = stmt.value
            if value is None or not all(isinstance(t, ast.Name) for t in targets):
                raise _reject(stmt, "module level may only bind names to constant values")
            if not _is_constant(value):
                raise _reject(
                    stmt,
                    "module-level values must be constants, tuples or frozensets "
                    "(no mutable state survives between calls)",
                )
            if any(isinstance(t, ast.Name) and t.id == "DEPENDENCIES" for t in targets):
                dependencies = _dependencies(stmt, value)
            continue
        raise _reject(stmt, "module level may only hold imports, constants and functions")
    return dependencies


def _dependencies(stmt: ast.stmt, value: ast.expr) -> tuple[str, ...]:
    if not isinstance(value, ast.Tuple) or not all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
    ):
        raise _reject(stmt, "DEPENDENCIES must be a tuple of contract names")
    return tuple(str(e.value) for e in value.elts if isinstance(e, ast.Constant))


def _entry_points(tree: ast.Module) -> dict[str, EntryPoint]:
    """Public functions: module-level defs not starting with `_`, first parameter `ctx`."""
    entry_points: dict[str, EntryPoint] = {}
    for stmt in tree.body:
        if not isinstance(stmt, ast.FunctionDef) or stmt.name.startswith("_"):
            continue
        args = stmt.args
        positional = [*args.posonlyargs, *args.args]
        if not positional or positional[0].arg != "ctx" or args.posonlyargs:
            raise _reject(stmt, f"public function {stmt.name!r} must take ctx first")
        if args.vararg is not None:
            raise _reject(stmt, f"public function {stmt.name!r} cannot take *args")
        named = positional[1:]
        n_required = len(named) - len(args.defaults)
        required = {a.arg for a in named[:n_required]}
        optional = {a.arg for a in named[n_required:]}
        for kwarg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            (optional if default is not None else required).add(kwarg.arg)
        entry_points[stmt.name] = EntryPoint(
            name=stmt.name,
            required=frozenset(required),
            optional=frozenset(optional),
            takes_any=args.kwarg is not None,
        )
    return entry_points

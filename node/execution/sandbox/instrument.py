"""Load-time rewriting of a checked contract: gas charges and size guards.

Runs on the tree `checker.check_source` accepted. The rewrite is a pure function of the
source, so every node compiles the same charges into the same places:

- each function body starts with `__ml_enter()` (one step, call depth +1) and leaves
  through `__ml_leave()` in a `finally` the contract itself may not write;
- each `for`/`while` body starts with `__ml_step()`; each comprehension level gets
  `__ml_step()` as its first condition, so every element costs a step; lambdas charge
  one step per call;
- `+ - * ** << % //`, `in`/`not in`, slices, f-string parts and sized method calls go
  through the guards of `guards.py`, which charge by size first;
- comparison operands, subscript keys and set/dict display keys are wrapped in
  `__ml_cv(...)`, which charges for the element walk C does when comparing or hashing
  containers (so `a == b` on huge or exponentially aliased lists costs gas, not time);
- every `except` body starts with `__ml_except(exc)`, so engine conditions (recursion
  limit, memory) are never swallowed by `except Exception`;
- annotations are dropped (never evaluated).
"""

from __future__ import annotations

import ast
from types import CodeType

from node.execution.sandbox.checker import SIZED_METHODS
from node.execution.types import ContractRejected

_BINOP_GUARDS: dict[type[ast.operator], str] = {
    ast.Add: "__ml_add",
    ast.Sub: "__ml_sub",
    ast.Mult: "__ml_mul",
    ast.Pow: "__ml_pow",
    ast.LShift: "__ml_lshift",
    ast.Mod: "__ml_mod",
    ast.FloorDiv: "__ml_floordiv",
}
_AUG_GUARDS: dict[type[ast.operator], str] = {
    **_BINOP_GUARDS,
    ast.Add: "__ml_iadd",
    ast.Mult: "__ml_imul",
}
_EXC_NAME = "__ml_exc"
_HASHING_METHODS = frozenset({"get", "setdefault", "pop"})


def _name(identifier: str) -> ast.Name:
    return ast.Name(id=identifier, ctx=ast.Load())


def _call(helper: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=_name(helper), args=list(args), keywords=[])


def _stmt(helper: str, *args: ast.expr) -> ast.Expr:
    return ast.Expr(value=_call(helper, *args))


def _operand(node: ast.expr) -> ast.expr:
    """`__ml_cv(x)`: charges for comparing or hashing x; constants need no charge."""
    if isinstance(node, (ast.Constant, ast.Starred)):
        return node
    return ast.copy_location(_call("__ml_cv", node), node)


class _Metering(ast.NodeTransformer):
    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        node.returns = None
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
            arg.annotation = None
        for extra in (node.args.vararg, node.args.kwarg):
            if extra is not None:
                extra.annotation = None
        body = [ast.Try(body=node.body, handlers=[], orelse=[], finalbody=[_stmt("__ml_leave")])]
        node.body = [_stmt("__ml_enter"), *body]
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.Lambda:
        self.generic_visit(node)
        node.body = ast.BoolOp(op=ast.And(), values=[_call("__ml_step"), node.body])
        return node

    def visit_For(self, node: ast.For) -> ast.For:
        self.generic_visit(node)
        node.body.insert(0, _stmt("__ml_step"))
        return node

    def visit_While(self, node: ast.While) -> ast.While:
        self.generic_visit(node)
        node.body.insert(0, _stmt("__ml_step"))
        return node

    def visit_comprehension(self, node: ast.comprehension) -> ast.comprehension:
        self.generic_visit(node)
        node.ifs.insert(0, _call("__ml_step"))
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        helper = _BINOP_GUARDS.get(type(node.op))
        if helper is None:
            return node
        return ast.copy_location(_call(helper, node.left, node.right), node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.stmt:
        self.generic_visit(node)
        helper = _AUG_GUARDS.get(type(node.op))
        if helper is None:
            return node
        target = node.target
        if isinstance(target, ast.Name):
            value = _call(helper, _name(target.id), node.value)
            return ast.copy_location(
                ast.Assign(targets=[ast.Name(id=target.id, ctx=ast.Store())], value=value),
                node,
            )
        if isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Slice):
            call = _call("__ml_aug_item", target.value, target.slice, _name(helper), node.value)
            return ast.copy_location(ast.Expr(value=call), node)
        raise ContractRejected(f"line {node.lineno}: augmented assignment target not supported")

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.stmt:
        self.generic_visit(node)
        if node.value is None:
            return ast.copy_location(ast.Pass(), node)
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        if not any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if not all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
                node.left = _operand(node.left)  # identity tests cost nothing extra
                node.comparators = [_operand(c) for c in node.comparators]
            return node
        if len(node.ops) != 1:
            raise ContractRejected(
                f"line {node.lineno}: chained comparisons with 'in' are not supported"
            )
        test = _call("__ml_contains", node.comparators[0], node.left)
        if isinstance(node.ops[0], ast.NotIn):
            return ast.copy_location(ast.UnaryOp(op=ast.Not(), operand=test), node)
        return ast.copy_location(test, node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        self.generic_visit(node)
        if not isinstance(node.slice, ast.Slice):
            node.slice = _operand(node.slice)  # hashed (dict) or compared: charge deep keys
            return node
        if not isinstance(node.ctx, ast.Load):
            return node
        parts = [
            p if p is not None else ast.Constant(value=None)
            for p in (node.slice.lower, node.slice.upper, node.slice.step)
        ]
        return ast.copy_location(_call("__ml_slice", node.value, *parts), node)

    def visit_Dict(self, node: ast.Dict) -> ast.Dict:
        self.generic_visit(node)
        node.keys = [k if k is None else _operand(k) for k in node.keys]
        return node

    def visit_Set(self, node: ast.Set) -> ast.Set:
        self.generic_visit(node)
        node.elts = [_operand(e) for e in node.elts]
        return node

    def visit_SetComp(self, node: ast.SetComp) -> ast.SetComp:
        self.generic_visit(node)
        node.elt = _operand(node.elt)
        return node

    def visit_DictComp(self, node: ast.DictComp) -> ast.DictComp:
        self.generic_visit(node)
        node.key = _operand(node.key)
        return node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _HASHING_METHODS and node.args:
            node.args[0] = _operand(node.args[0])  # the key is hashed (dict.get & co.)
        if isinstance(func, ast.Attribute) and func.attr in SIZED_METHODS:
            call = ast.Call(
                func=_name("__ml_method"),
                args=[func.value, ast.Constant(value=func.attr), *node.args],
                keywords=node.keywords,
            )
            return ast.copy_location(call, node)
        return node

    def visit_FormattedValue(self, node: ast.FormattedValue) -> ast.FormattedValue:
        self.generic_visit(node)
        node.value = _call("__ml_fmt", node.value, ast.Constant(value=node.conversion))
        node.conversion = -1
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        self.generic_visit(node)
        if node.name is None:
            node.name = _EXC_NAME
        node.body.insert(0, _stmt("__ml_except", _name(node.name)))
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.stmt:
        if node.module == "__future__":
            return ast.copy_location(ast.Pass(), node)
        return node


def instrument(tree: ast.Module, filename: str) -> CodeType:
    """Rewrites a checked tree (in place) and compiles it."""
    metered = _Metering().visit(tree)
    assert isinstance(metered, ast.Module)
    ast.fix_missing_locations(metered)
    return compile(metered, filename, "exec", dont_inherit=True)
